"""vivit_adapter: ViViT factorised encoders trained cheaply (frozen spatial + adapter)."""

import setuptools

# A set that installs and works together on CPU with Python 3.11 (see docs/design.md §5).
# tensorboard: clu's metric writers import it; importlib_resources: tfds imports it.
INSTALL_REQUIRES = [
    'jax[cpu]==0.10.2',
    'flax==0.12.8',
    'optax==0.2.8',
    'ml_collections==1.1.0',
    'orbax-checkpoint==0.12.8',
    'clu==0.0.12',
    'tensorflow-cpu==2.21.0',
    'tensorflow-datasets==4.9.10',
    'tensorboard==2.21.0',
    'importlib_resources==7.1.0',
    'absl-py==2.5.1',
    'numpy==2.4.6',
    'tqdm==4.67.1',
    'matplotlib==3.11.2',
    # Hugging Face / OpenCLIP image towers as the spatial encoder (checkpoints/towers.py),
    # read with its NumPy API: no PyTorch at run time.
    'safetensors==0.8.0',
]

EXTRAS_REQUIRE = {
    # Decoding video files (converter, predict CLI).
    'video': ['av==18.1.0'],
    # Cloud TPU VMs: jax's TPU runtime (libtpu, from PyPI). scripts/cloud_tpu.sh installs it.
    'tpu': ['jax[tpu]==0.10.2'],
    # The PyTorch reference of the factorised encoder (benchmarks/torch_compare.py).
    # On Linux use the CPU wheel (e.g. --index-url https://download.pytorch.org/whl/cpu):
    # plain PyPI resolves this pin to the multi-GB CUDA build.
    'torch': ['torch==2.13.0'],
    # transformers: the image towers' parity tests build tiny CLIP / SigLIP / DINOv2
    # models with it (CPU, random weights; nothing is downloaded).
    'test': ['pytest==9.0.3', 'pytest-xdist==3.8.0', 'av==18.1.0', 'torch==2.13.0',
             'transformers==5.25.0'],
    # NVIDIA GPUs: JAX's CUDA 12 plugin with the CUDA libraries as wheels (no system
    # CUDA needed, only an NVIDIA driver >= 525), pinned to the jax above. TensorFlow
    # stays tensorflow-cpu: it only reads the input and must not take the GPUs.
    'cuda': ['jax[cuda12]==0.10.2'],
}

setuptools.setup(
    name='vivit_adapter',
    version='0.1.0',
    description='ViViT factorised encoder with frozen spatial encoder and adapter (JAX/Flax).',
    # experiments: the studies load experiment files as modules (experiments.NAME).
    packages=setuptools.find_packages(include=['vivit_adapter', 'vivit_adapter.*',
                                               'data_pipelines', 'data_pipelines.*',
                                               'experiments']),
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
