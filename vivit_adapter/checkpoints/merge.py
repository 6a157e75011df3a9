"""Merging a checkpoint's parameters into a model's parameter tree, refusing silent mismatches.

Every loader in this package ends here: it renames and reshapes a checkpoint into this
project's names, then `merge_params` copies it into the freshly initialised tree. A name
that is missing, unexpected or of the wrong shape is never skipped quietly; only the parts
a caller names as meant to be fresh (`allow_missing`), dropped (`ignore_unexpected`) or
kept from the model (`keep_target`) are exempt.
"""

import collections
import re
from typing import Any, Dict, Iterable, Mapping, NamedTuple, Sequence, Tuple

import flax
import numpy as np

from data_pipelines import cli

Params = Any
_MAX_LISTED = 8  # per-tensor lines per kind of mismatch; the summary line covers the rest


class Merged(NamedTuple):
  """What a surgery function returns: the merged tree, and what the run log says of it."""
  params: dict
  restored: Tuple[str, ...]  # the model's names that now hold checkpoint values
  fresh: Tuple[str, ...]  # the model's names that kept their fresh init
  unused: Tuple[str, ...]  # checkpoint names (after renaming) with no place in the model
  notes: Tuple[str, ...] = ()  # what changed on the way in: resampled, inflated, zeros


def flatten(tree: Mapping[str, Any]) -> dict:
  """A nested (or already '/'-flat) dict as {'a/b/c': leaf}."""
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep='/')


def unflatten(flat: Mapping[str, Any]) -> dict:
  """The inverse of `flatten`: a plain nested dict."""
  return flax.traverse_util.unflatten_dict(dict(flat), sep='/')


def matches(name: str, patterns: Iterable[str]) -> bool:
  """Whether `name` is, or sits under, one of `patterns`.

  A pattern is a regex over whole '/'-separated components: 'Adapter' matches
  'Adapter/down/kernel' but not 'AdapterX/...'; 'encoderblock_[0-9]+' style regexes and
  'a|b' alternatives work too.
  """
  return any(re.fullmatch(f'(?:{p})(?:/.*)?', name) for p in patterns)


def merge_params(target: Params, source: Params, *, source_name: str,
                 allow_missing: Iterable[str] = (),
                 ignore_unexpected: Iterable[str] = (),
                 keep_target: Iterable[str] = ()) -> dict:
  """Copies `source` values into `target`, raising on any mismatch that is not exempted.

  Args:
    target: the model's parameter tree (nested dict); it fixes names, shapes and dtypes.
    source: the checkpoint's parameters, nested or flat with '/'-joined names.
    source_name: the checkpoint's path or description, quoted in errors.
    allow_missing: patterns (see `matches`) of target names that may be absent from
      the source; they keep the target's value (e.g. 'Adapter', 'output_projection').
    ignore_unexpected: patterns of source names that are dropped (e.g. 'head').
    keep_target: patterns of target names that keep the target's value even when the
      source has them (shape not checked); their source entries are dropped.

  Returns:
    A new nested dict with the target's structure; copied leaves are numpy arrays cast
    to the target leaf's dtype.

  Raises:
    cli.CheckpointMismatchError (a ValueError): naming `source_name`; its first line
      summarises which sizes differ, the next lines list missing names, unexpected
      names and shape mismatches (with both shapes).
  """
  tgt, src = flatten(target), flatten(source)
  keep, allow_missing = tuple(keep_target), tuple(allow_missing)
  ignore_unexpected = tuple(ignore_unexpected)
  src = {k: v for k, v in src.items() if not matches(k, keep)}
  missing = [k for k in tgt if k not in src and not matches(k, keep)
             and not matches(k, allow_missing)]
  unexpected = [k for k in src if k not in tgt and not matches(k, ignore_unexpected)]
  mismatched = [k for k in src if k in tgt
                and tuple(np.shape(src[k])) != tuple(np.shape(tgt[k]))]
  if missing or unexpected or mismatched:
    raise cli.CheckpointMismatchError(mismatch_message(
        source_name, _shapes(tgt), _shapes(src), missing, unexpected, mismatched))
  merged = dict(tgt)
  for k, v in src.items():
    if k in tgt:
      merged[k] = np.asarray(v, dtype=tgt[k].dtype)
  return unflatten(merged)


def account(params: Params, target: Params, source: Params, *,
            keep_target: Iterable[str] = (), notes: Iterable[str] = ()) -> Merged:
  """`params`, the result of `merge_params(target, source, ...)`, with its account.

  Restored: the model's names that `source` supplied and `keep_target` did not keep;
  fresh: every other name of the model; unused: the source's names that the model
  lacks (dropped by `ignore_unexpected` or `keep_target`).
  """
  tgt, src, keep = flatten(target), flatten(source), tuple(keep_target)
  restored = tuple(k for k in src if k in tgt and not matches(k, keep))
  restored_set = set(restored)
  return Merged(params, restored, tuple(k for k in tgt if k not in restored_set),
                tuple(k for k in src if k not in tgt), tuple(notes))


def _shapes(flat: Mapping[str, Any]) -> Dict[str, Tuple[int, ...]]:
  return {k: tuple(np.shape(v)) for k, v in flat.items()}


def size_summary(target: Mapping[str, Sequence[int]], source: Mapping[str, Sequence[int]],
                 mismatched: Sequence[str]) -> str:
  """Which sizes differ, most frequent first: '64 in the checkpoint where the model has
  32 (40 tensors, e.g. embedding/kernel)'. A wrong width shows as one line, not 40."""
  counts, example = collections.Counter(), {}
  for name in sorted(mismatched):
    a, b = tuple(source[name]), tuple(target[name])
    pairs = ({(x, y) for x, y in zip(a, b) if x != y} if len(a) == len(b)
             else {(f'rank {len(a)}', f'rank {len(b)}')})
    for pair in pairs:
      counts[pair] += 1
      example.setdefault(pair, name)
  return '; '.join(f'{x} in the checkpoint where the model has {y} ({n} tensor'
                   f'{"s" if n > 1 else ""}, e.g. {example[(x, y)]})'
                   for (x, y), n in counts.most_common(3))


def _listed(title: str, lines: Sequence[str]) -> list:
  more = len(lines) - _MAX_LISTED
  return ([f'{title} ({len(lines)}):'] + [f'  {l}' for l in lines[:_MAX_LISTED]]
          + ([f'  ... and {more} more'] if more > 0 else []))


def mismatch_message(source_name: str, target: Mapping[str, Sequence[int]],
                     source: Mapping[str, Sequence[int]], missing: Sequence[str],
                     unexpected: Sequence[str], mismatched: Sequence[str]) -> str:
  """A summary line (which sizes differ, how many names are missing or unexpected), then
  the per-tensor detail; `target` and `source` map flat names to shapes."""
  summary = [s for s in (
      size_summary(target, source, mismatched) if mismatched else '',
      f'{len(missing)} model tensors missing from it (e.g. {sorted(missing)[0]})'
      if missing else '',
      f'{len(unexpected)} tensors the model lacks (e.g. {sorted(unexpected)[0]})'
      if unexpected else '') if s]
  lines = [f'Checkpoint {source_name} does not fit the model: {"; ".join(summary)}. '
           'Check that config.model matches the checkpoint (sizes, depth, patches, '
           'classifier), or choose which parts to restore in config.init_from.']
  if missing:
    lines += _listed('missing from the checkpoint',
                     [f'{k} {tuple(target[k])}' for k in sorted(missing)])
  if unexpected:
    lines += _listed('unexpected in the checkpoint, not in the model',
                     [f'{k} {tuple(source[k])}' for k in sorted(unexpected)])
  if mismatched:
    lines += _listed('shape mismatch', [f'{k}: checkpoint {tuple(source[k])} vs model '
                                        f'{tuple(target[k])}' for k in sorted(mismatched)])
  return '\n'.join(lines)
