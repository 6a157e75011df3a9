"""One benchmark case = one training mode of one model size at one clip shape.

Every case builds the trainer's own pieces (`create_model`, then `assembly.build`: the
frozen split, optimizer, schedule, step and state) from a locked `base_config()`, so
what is measured is the step that `python -m vivit_adapter.main` runs, not a copy of it.

Compile-only analysis never allocates: the parameters, optimizer state and batch are
`jax.ShapeDtypeStruct` trees from `jax.eval_shape`, so a ViViT-B at 224 px and 1024
frames compiles on a laptop CPU and `memory_analysis()` reports what one device would
need. Measured step time allocates for real and is only sensible at small sizes.
"""

import dataclasses
import statistics
import time
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from vivit_adapter import configs
from vivit_adapter import models
from vivit_adapter.models import create_model, variants
from vivit_adapter.train_lib import assembly, compiled_memory, optimizers, startup, steps

# mode -> what it sets on top of the end-to-end model (docs/design.md §1 and §2).
# 'stage2+cached': the stage-2 step from cached frozen features (docs/design.md §2b),
# whose batch is what the frozen part stored (bfloat16, the cache's default).
MODES = ('baseline', 'baseline+remat', 'stage2', 'stage2+chunked', 'stage2+cached')
CACHE_DTYPE = jnp.bfloat16
ADAPTER_TYPES = models.ADAPTER_TYPES  # what --adapters may name
# The schedule's length only shapes the learning rate, never the step's memory or time;
# torch_compare's trainer step uses the same.
SCHEDULE_STEPS_PER_EPOCH, SCHEDULE_TOTAL_STEPS = 100, 1000


@dataclasses.dataclass(frozen=True)
class Case:
  """The inputs of one measurement; `frames` and `batch` are per device."""
  variant: str
  mode: str
  frames: int
  batch: int
  resolution: int
  num_classes: int = 400
  chunk_size: int = 4  # temporal indices per chunk in 'stage2+chunked'
  # (dotted config.model key, value) pairs applied after the variant and the mode's
  # settings, e.g. (('spatial_transformer.num_layers', 2),): tests and quick what-ifs.
  model_overrides: Tuple[Tuple[str, object], ...] = ()

  def replace(self, **changes) -> 'Case':
    return dataclasses.replace(self, **changes)


def frame_step(case: Case) -> int:
  """Frame counts this case accepts are multiples of this (tubelet x chunk)."""
  tubelet = variants.parse_variant(case.variant)['patches.size'][2]
  return tubelet * (case.chunk_size if case.mode == 'stage2+chunked' else 1)


def check_case(case: Case) -> None:
  """Raises ValueError naming the flag that makes `case` impossible."""
  variants.parse_variant(case.variant)  # names the bad variant itself
  if case.mode not in MODES:
    raise ValueError(f'--modes: unknown mode {case.mode!r}; expected some of {MODES}.')
  patch = variants.parse_variant(case.variant)['patches.size'][0]
  for name, value in (('frames', case.frames), ('batch', case.batch),
                      ('resolution', case.resolution), ('num_classes', case.num_classes),
                      ('chunk_size', case.chunk_size)):
    if value <= 0:
      raise ValueError(f'--{name}={value} must be positive.')
  if case.resolution % patch:
    raise ValueError(f'--resolution={case.resolution} must be a multiple of the patch '
                     f'size {patch} of variant {case.variant}.')
  step = frame_step(case)
  if case.frames % step:
    what = 'tubelet length x --chunk_size' if case.mode == 'stage2+chunked' else 'tubelet length'
    raise ValueError(f'--frames={case.frames} in mode {case.mode} must be a multiple of '
                     f'{step} (the {what} of {case.variant}).')


def case_config(case: Case) -> ml_collections.ConfigDict:
  """The locked trainer config of `case` (base_config + the mode's settings)."""
  config = configs.base_config()
  # The variant is expanded here (not in create_model) so model_overrides apply on top.
  variants.apply_variant(config.model, case.variant)
  config.batch_size = case.batch
  config.dataset.num_frames = case.frames
  config.dataset.crop_size = case.resolution
  # The start-up check covers the input pipeline's settings too (crop within the resize).
  config.dataset.min_resize = max(config.dataset.min_resize, case.resolution)
  config.dataset.num_classes = case.num_classes
  stage2 = case.mode.startswith('stage2')
  config.stage = 'stage2' if stage2 else 'baseline'
  config.model.freeze_spatial = stage2
  config.model.adapter.type = 'attention' if stage2 else 'none'
  config.model.remat = case.mode == 'baseline+remat'
  config.model.spatial_chunk_size = case.chunk_size if case.mode == 'stage2+chunked' else 0
  # The overrides come last, so they win over the mode's defaults (an adapter type named
  # in them is the one measured). `adapter.*` keys apply to the stage-2 modes only: the
  # baseline is the end-to-end model without an adapter, as in the ablation.
  for key, value in case.model_overrides:
    if stage2 or not key.startswith('adapter.'):
      _set_model_key(config.model, key, value)
  startup.check_config(config)
  return config


def _set_model_key(model_config, dotted: str, value) -> None:
  *parents, leaf = dotted.split('.')
  node = model_config
  for part in parents:
    node = node[part]
  if leaf not in node:
    raise ValueError(f'model override {dotted!r}: config.model has no such key.')
  node[leaf] = value


@dataclasses.dataclass
class Built:
  """The trainer's pieces for one case: jitted step, abstract state and batch."""
  config: ml_collections.ConfigDict
  model: object
  parts: assembly.TrainParts
  jitted: object  # the step jitted as the trainer jits it (state donated)
  state: steps.TrainState  # of ShapeDtypeStructs
  batch: Dict[str, jax.ShapeDtypeStruct]


def _video_shape(case: Case, batch: int) -> Tuple[int, ...]:
  return (batch, case.frames, case.resolution, case.resolution, 3)


def build(case: Case) -> Built:
  """Builds the trainer's step for `case` with an abstract (unallocated) state."""
  check_case(case)
  config = case_config(case)
  model = create_model(config.model, case.num_classes, config.dataset.normalization)
  params = assembly.abstract_params(config, model)
  cached = case.mode == 'stage2+cached'
  part = models.TRAINABLE_PART if cached else models.WHOLE
  parts = assembly.build(config, assembly.ModelPart(model, part), params,
                         num_classes=case.num_classes,
                         steps_per_epoch=SCHEDULE_STEPS_PER_EPOCH,
                         total_steps=SCHEDULE_TOTAL_STEPS)
  # uint8 pixels, as the input pipelines hand them over (the model normalises them).
  video = jax.ShapeDtypeStruct(_video_shape(case, case.batch), jnp.uint8)
  inputs = frozen_output(model, params, video) if cached else video
  batch = {'inputs': inputs, 'label': jax.ShapeDtypeStruct((case.batch,), jnp.int32)}
  return Built(config, model, parts, parts.jit_step(), parts.abstract_state(params), batch)


def frozen_output(model, params, video) -> jax.ShapeDtypeStruct:
  """The shape of what extraction stores for `video`, in the cache's dtype."""
  out = jax.eval_shape(
      lambda p, v: model.apply({'params': p}, v, part=models.FROZEN_PART), params, video)
  return jax.ShapeDtypeStruct(out.shape, CACHE_DTYPE)


def time_extraction(case: Case, built: Built, steps_timed: int, warmup: int,
                    seed: int = 0) -> Dict[str, float]:
  """Seconds per clip-view of the frozen forward pass that extraction runs once per
  stored view (embedding + spatial encoder, inference only), at `case.batch` clips."""
  params = assembly.init_params(built.config, built.model, jax.random.PRNGKey(seed))
  video = _random(jax.ShapeDtypeStruct(_video_shape(case, case.batch), jnp.uint8),
                  jax.random.PRNGKey(seed + 1))
  forward = jax.jit(lambda p, v: built.model.apply({'params': p}, v,
                                                   part=models.FROZEN_PART).astype(CACHE_DTYPE))
  times = []
  for i in range(warmup + steps_timed):
    start = time.perf_counter()
    jax.block_until_ready(forward(params, video))
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return {'extract_s_per_clip': statistics.median(times) / case.batch,
          'extract_times_s': times}


def compile_built(built: Built):
  """Lowers and compiles the step on the abstract state: (compiled, figures)."""
  start = time.perf_counter()
  compiled, memory = compiled_memory.compile_and_measure(built.jitted, built.state,
                                                         built.batch)
  return compiled, {'memory': memory,
                    'params': optimizers.count_params(built.state.params, built.parts.frozen),
                    'compile_s': time.perf_counter() - start}


def compile_case(case: Case) -> Dict[str, object]:
  """Compiles `case`'s train step (no execution): memory in bytes, parameter counts."""
  return compile_built(build(case))[1]


def _real_state(built: Built, seed: int) -> steps.TrainState:
  rng = jax.random.PRNGKey(seed)
  params = assembly.init_params(built.config, built.model, rng)
  return built.parts.init_state(params, rng)


def _random(spec: jax.ShapeDtypeStruct, key) -> jnp.ndarray:
  """Random values of `spec`'s shape and dtype: uint8 pixels in [0, 255] for a video,
  uniform in [-1, 1] for stored features."""
  if spec.dtype == jnp.uint8:
    return jax.random.randint(key, spec.shape, 0, 256, jnp.int32).astype(jnp.uint8)
  return jax.random.uniform(key, spec.shape, jnp.float32, -1.0, 1.0).astype(spec.dtype)


def _real_batch(case: Case, built: Built, seed: int) -> Dict[str, jnp.ndarray]:
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
  return {'inputs': _random(built.batch['inputs'], k1),
          'label': jax.random.randint(k2, (case.batch,), 0, case.num_classes)}


def time_case(case: Case, built: Built, step_fn, steps_timed: int, warmup: int,
              seed: int = 0) -> Dict[str, object]:
  """Runs the compiled step for real: median and all of `steps_timed` step times.

  `warmup` untimed steps run first; the state is donated and replaced every step,
  as in the trainer's loop.
  """
  if steps_timed <= 0 or warmup < 0:
    raise ValueError(f'--steps={steps_timed} must be positive and --warmup={warmup} >= 0.')
  state, batch = _real_state(built, seed), _real_batch(case, built, seed)
  times = []
  for i in range(warmup + steps_timed):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return {'step_s': statistics.median(times), 'step_times_s': times,
          'loss': float(metrics['loss'])}

