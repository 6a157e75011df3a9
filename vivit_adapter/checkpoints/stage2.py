"""A video checkpoint (stage 1, or a scenic ViViT-FE) -> a video model of another clip length.

Stage 2 (docs/design.md §1) takes every part of the stage-1 model — tubelet embedding,
spatial and temporal encoders, head — and inserts a fresh adapter. Only the temporal
position embedding depends on the clip length; it is interpolated from the source's
F/t indices to the target's N/t. The adapter's last projection is zero-initialised, so
keeping its fresh init makes the stage-2 model compute what the stage-1 model computed.
"""

from typing import Iterable

import numpy as np

from vivit_adapter.checkpoints import merge, posemb
from vivit_adapter.models import names


def temporal_posemb_to_target(source_params, target_params) -> dict:
  """The flat source with its temporal position embedding at the target's length.

  The CLS row (present when the target has `cls_TemporalTransformer`) is kept.
  Anything else, including a posemb of another width, is left for `merge_params` to
  report.
  """
  src, tgt = merge.flatten(source_params), merge.flatten(target_params)
  name = names.TEMPORAL_POSEMB
  if name not in src or name not in tgt:
    return src
  pe, tgt_shape = np.asarray(src[name]), tuple(np.shape(tgt[name]))
  if pe.shape != tgt_shape and pe.ndim == 3 and pe.shape[2] == tgt_shape[2]:
    has_cls = names.TEMPORAL_CLS in tgt
    src[name] = posemb.interpolate_temporal_posemb(pe, tgt_shape[1] - int(has_cls), has_cls)
  return src


def stage1_to_stage2(stage1_params, stage2_target, *, source_name: str,
                     keep_target: Iterable[str] = ()) -> merge.Merged:
  """Initialises a (stage-2) video model from a video checkpoint of any clip length.

  Args:
    stage1_params: the source parameter tree (ViViT-FE names; an Adapter subtree, if
      any, is copied too).
    stage2_target: the target model's freshly initialised parameters.
    source_name: the checkpoint path, quoted in errors.
    keep_target: name patterns that keep the target's init even though the source has
      them, e.g. `names.TEMPORAL_GROUP` or `names.HEAD_GROUP` (see `merge.matches`).

  Returns:
    `merge.Merged`: params holds everything from the source (temporal position
    embedding interpolated to the target's length) and the Adapter from the target;
    notes say whether the temporal position embedding was resampled.
  """
  keep_target = tuple(keep_target)
  converted = temporal_posemb_to_target(stage1_params, stage2_target)
  params = merge.merge_params(stage2_target, converted, source_name=source_name,
                              allow_missing=names.STAGE2_NEW, keep_target=keep_target)
  return merge.account(params, stage2_target, converted, keep_target=keep_target,
                       notes=_temporal_resample_note(stage1_params, converted, keep_target))


def _temporal_resample_note(source_params, converted: dict, keep_target) -> list:
  """A kept temporal posemb was neither taken nor resampled: nothing to say then."""
  name, source = names.TEMPORAL_POSEMB, merge.flatten(source_params)
  if name not in source or merge.matches(name, keep_target):
    return []
  return posemb.resample_note(name, source[name], converted[name])
