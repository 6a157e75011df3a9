"""Checkpoint surgery: every way a run's parameters can start from an earlier model.

* `merge`: copy a checkpoint into the model's tree, listing every mismatch;
* `posemb`: resample position embeddings (spatial grid, temporal length);
* `vit_npz`: image ViT .npz (both layouts) -> tubelet embedding + spatial encoder;
* `scenic`: scenic ViViT flax checkpoints -> parameter tree;
* `workdir`: this project's orbax checkpoints -> parameter tree;
* `stage2`: a video checkpoint -> a model of another clip length, with a fresh adapter;
* `load`: `load_init_params`, the trainer's entry point for `config.init_from`.
"""

from vivit_adapter.checkpoints.load import FORMATS, detect_format, load_init_params
from vivit_adapter.checkpoints.merge import Merged, flatten, merge_params, unflatten
from vivit_adapter.checkpoints.posemb import interpolate_temporal_posemb, resize_spatial_posemb
from vivit_adapter.checkpoints.scenic import load_scenic_checkpoint
from vivit_adapter.checkpoints.stage2 import stage1_to_stage2
from vivit_adapter.checkpoints.vit_npz import inflate_kernel, load_vit_npz, vit_to_vivit_spatial
from vivit_adapter.checkpoints.workdir import restore_workdir_params

__all__ = [
    'FORMATS', 'detect_format', 'load_init_params', 'Merged', 'flatten', 'merge_params',
    'unflatten', 'interpolate_temporal_posemb', 'resize_spatial_posemb', 'load_scenic_checkpoint',
    'stage1_to_stage2', 'inflate_kernel', 'load_vit_npz', 'vit_to_vivit_spatial',
    'restore_workdir_params',
]
