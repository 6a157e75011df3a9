"""vivit_adapter: cheap training of ViViT factorised encoders on many frames."""

__version__ = '0.1.0'
