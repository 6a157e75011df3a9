"""The one place that turns (config, model, parameters) into what a run trains with.

`build` resolves the frozen parameter names, the optimizer and its learning-rate
schedule, and the train step; `TrainParts` then makes the step-0 state (real, or
abstract for compile-only analysis) and jits the step. The trainer, the step benchmark
(benchmarks/step_cases.py) and the torch comparison (benchmarks/torch_compare.py) all
go through here, so what the benchmarks measure is what `python -m vivit_adapter.main`
runs and cannot drift from it.
"""

import dataclasses
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vivit_adapter import checkpoints
from vivit_adapter.train_lib import optimizers, parallel, steps

# step_factory(config, model, tx, schedule, *, frozen, num_classes) -> train_step.
StepFactory = Callable[..., Callable]


def dummy_video(config, model, batch: int = 1):
  """Zeros of the clip shape and dtype `model` reads: uint8 pixels when it normalises
  on the device (the pipelines' output), else float32."""
  ds = config.dataset
  dtype = jnp.uint8 if model.normalization else jnp.float32
  return jnp.zeros((batch, ds.num_frames, ds.crop_size, ds.crop_size, 3), dtype)


def run_rngs(config):
  """(parameter-init key, train-state key) of a run, from config.rng_seed."""
  return tuple(jax.random.split(jax.random.PRNGKey(config.rng_seed)))


def init_params(config, model, rng, mesh=None) -> Dict[str, Any]:
  """Fresh parameters for a clip of `config.dataset`'s shape; replicated on `mesh` if
  given, so they are created where they live rather than copied there."""
  out = parallel.replicated(mesh) if mesh is not None else None
  init = jax.jit(lambda r: model.init(r, dummy_video(config, model))['params'],
                 out_shardings=out)
  return init(rng)


def load_init_from(config, params, mesh=None) -> Tuple[Dict[str, Any], str]:
  """`params` with `config.init_from` applied (checkpoint surgery on the host), placed
  replicated on `mesh` if given. Returns (params, the log message of what came from where).

  One place for the trainer's start and the feature extraction, so a cache is made from
  exactly the parameters stage 2 starts from.
  """
  ds = config.dataset
  params, message = checkpoints.load_init_params(
      config.init_from, jax.device_get(params), model_config=config.model,
      frame_size=(ds.crop_size, ds.crop_size))
  return (parallel.replicate(params, mesh) if mesh is not None else params), message


@dataclasses.dataclass(frozen=True)
class ModelPart:
  """A model whose `apply` runs one part (models.WHOLE / FROZEN_PART / TRAINABLE_PART).

  The step factories call `model.apply(variables, inputs, train=..., rngs=...)`; given a
  ModelPart(model, TRAINABLE_PART) they build the stage-2 step that starts from cached
  frozen features, with no other change.
  """
  model: Any
  part: str

  def apply(self, variables, inputs, **kwargs):
    return self.model.apply(variables, inputs, part=self.part, **kwargs)


def abstract_params(config, model) -> Dict[str, jax.ShapeDtypeStruct]:
  """The shapes and dtypes of `init_params`, without allocating them."""
  return jax.eval_shape(lambda r: init_params(config, model, r), jax.random.PRNGKey(0))


@dataclasses.dataclass(frozen=True)
class TrainParts:
  """The frozen names, optimizer, schedule and (unjitted) train step of one run."""
  frozen: Tuple[str, ...]
  tx: optax.GradientTransformation
  schedule: Callable[[int], jnp.ndarray]
  train_step: Callable  # train_step(state, batch) -> (state, metrics)

  def init_state(self, params, rng, mesh=None) -> steps.TrainState:
    """The step-0 state on `params`; on `mesh`, every part is replicated (the optimizer
    state created there). Without a mesh the arrays stay on the default device."""
    if mesh is None:
      return steps.TrainState(step=jnp.int32(0), params=params,
                              opt_state=jax.jit(self.tx.init)(params), rng=rng)
    opt_state = jax.jit(self.tx.init, out_shardings=parallel.replicated(mesh))(params)
    return steps.TrainState(step=parallel.replicate(np.int32(0), mesh), params=params,
                            opt_state=opt_state, rng=parallel.replicate(rng, mesh))

  def abstract_state(self, params) -> steps.TrainState:
    """`init_state` as `jax.ShapeDtypeStruct`s: `params` may itself be abstract."""
    return jax.eval_shape(lambda p: self.init_state(p, jax.random.PRNGKey(0)), params)

  def jit_step(self, mesh=None):
    """The step jitted as the trainer runs it. The state is donated, so XLA updates it
    in place; on `mesh` the state is replicated and the batch split across devices."""
    if mesh is None:
      return jax.jit(self.train_step, donate_argnums=(0,))
    replicated = parallel.replicated(mesh)
    return jax.jit(self.train_step, donate_argnums=(0,),
                   in_shardings=(replicated, parallel.batch_sharding(mesh)),
                   out_shardings=(replicated, replicated))


def build(config, model, params, *, num_classes: int, steps_per_epoch: int,
          total_steps: int,
          step_factory: StepFactory = steps.make_train_step_from_config) -> TrainParts:
  """The run's `TrainParts` for `params` (real arrays or ShapeDtypeStructs).

  `step_factory` builds the step from the optimizer; a step whose forward pass differs
  (e.g. one that starts from cached frozen features) passes its own and keeps the
  frozen split, optimizer and state of every other run.
  """
  frozen = optimizers.frozen_keys(params, config.model.freeze_spatial,
                                  config.model.trainable_spatial_layers)
  tx, schedule = optimizers.make_optimizer(config, params, frozen, steps_per_epoch,
                                           total_steps)
  train_step = step_factory(config, model, tx, schedule, frozen=frozen,
                            num_classes=num_classes)
  return TrainParts(frozen=frozen, tx=tx, schedule=schedule, train_step=train_step)
