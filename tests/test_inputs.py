"""vivit_adapter.models.inputs: uint8 pixels normalised on the device, as on the host."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from tests.helpers import perturbed_params, run
from vivit_adapter import configs
from vivit_adapter.models import create_model
from vivit_adapter.models import inputs

# The normalisations written out, independently of models/inputs.py: [0, 1] pixels
# minus mean over std, per channel.
HOST = {'minus_one_to_one': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        # OpenAI CLIP's preprocessing constants (its README / image processor config).
        'clip': ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}


def host_normalize(pixels, normalization):
  """The float32 host path the pipelines used to take: /255, then (x - mean) / std."""
  mean, std = HOST[normalization]
  return ((pixels.astype(np.float64) / 255.0 - mean) / std).astype(np.float32)


def uint8_video(shape=(2, 8, 16, 16, 3), seed=3):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize('normalization', inputs.NORMALIZATIONS)
def test_normalize_equals_the_host_computation_for_every_level(normalization):
  levels = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, 3))
  out = np.asarray(inputs.normalize(levels, normalization))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, host_normalize(levels, normalization), rtol=0, atol=1e-6)
  # Float pixels (mixup's blend) are normalised the same way.
  np.testing.assert_array_equal(
      np.asarray(inputs.normalize(levels.astype(np.float32), normalization)), out)
  bf16 = inputs.normalize(levels, normalization, jnp.bfloat16)
  assert bf16.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(bf16, np.float32),
                                np.asarray(out.astype(jnp.bfloat16), np.float32))


def test_the_normalizations_are_the_ones_written_out_here():
  assert set(inputs.NORMALIZATIONS) == set(HOST)
  with pytest.raises(ValueError, match=r"config.dataset.normalization='zero_one'"):
    inputs.normalize(np.zeros(3, np.uint8), 'zero_one')


@pytest.mark.parametrize('normalization,chunk', [('imagenet', 0), ('minus_one_to_one', 2)])
def test_uint8_video_normalised_on_device_gives_the_host_paths_logits(normalization, chunk):
  cfg = helpers.tiny_model(configs.base_config().model, head_kernel_init='lecun_normal',
                           spatial_chunk_size=chunk)
  on_device = create_model(cfg, 5, normalization)
  host = create_model(cfg, 5)  # takes normalised float video as it is
  pixels = uint8_video()
  floats = host_normalize(pixels, normalization)
  params = perturbed_params(host, jnp.asarray(floats))
  expected = np.asarray(run(host, params, floats))
  np.testing.assert_allclose(np.asarray(run(on_device, params, pixels)), expected,
                             rtol=0, atol=1e-6)
  assert np.abs(expected).max() > 0.1  # not a comparison of zeros


def test_uint8_video_needs_a_normalization():
  model = create_model(helpers.tiny_model(configs.base_config().model), 5)
  pixels = uint8_video()
  params = perturbed_params(model, jnp.zeros(pixels.shape))
  with pytest.raises(ValueError, match=r'uint8 video .* normalization=config.dataset'):
    run(model, params, pixels)


def test_uint8_input_is_a_quarter_of_the_float32_argument_bytes():
  model = create_model(helpers.tiny_model(configs.base_config().model), 5, 'imagenet')
  shape = (2, 8, 16, 16, 3)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape, jnp.uint8))

  def argument_bytes(dtype):
    video = jax.ShapeDtypeStruct(shape, dtype)
    compiled = jax.jit(lambda p, v: model.apply(p, v)).lower(params, video).compile()
    return compiled.memory_analysis().argument_size_in_bytes

  video_bytes = np.prod(shape)
  assert argument_bytes(jnp.float32) - argument_bytes(jnp.uint8) == 3 * video_bytes
