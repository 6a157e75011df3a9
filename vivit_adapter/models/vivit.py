"""ViViT factorised encoder with an adapter between the spatial and temporal encoders.

    video (B,T,H,W,3)
      -> tubelet embedding `embedding`                    (B, T', N, D)
      -> spatial encoder `SpatialTransformer` per index    (B, T', 1+N, D)
      -> adapter `Adapter` (optional)                      (B, T', D)
      -> temporal encoder `TemporalTransformer`            (B, D)
      -> head `output_projection`                          (B, num_classes)

Parameter names (models/names.py) and semantics follow scenic's ViViT factorised
encoder, so a scenic parameter tree applies to this module unchanged (when the adapter
is 'none').
"""

from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_adapter.models import adapter as adapter_lib
from vivit_adapter.models import inputs as inputs_lib
from vivit_adapter.models import layers
from vivit_adapter.models import names
from vivit_adapter.models import towers


# scenic zero-initialises the head, which suits fine-tuning a pretrained encoder. From
# scratch it can leave a small model at chance: with a zero head nothing below it gets
# a gradient until the random features already separate the classes.
HEAD_INITS = {'zeros': nn.initializers.zeros, 'lecun_normal': nn.initializers.lecun_normal()}

# What one call computes (`part=`): the whole model, or one side of the frozen boundary.
# Stage 2 from cached features (docs/design.md §2b) runs the frozen side once per view
# at extraction and the trainable side at every step; `WHOLE` is their composition.
WHOLE, FROZEN_PART, TRAINABLE_PART = 'whole', 'frozen', 'trainable'
PARTS = (WHOLE, FROZEN_PART, TRAINABLE_PART)


class EncoderSpec(NamedTuple):
  num_layers: int
  num_heads: int
  mlp_dim: int


class AdapterSpec(NamedTuple):
  type: str = 'none'
  hidden_size: int = 0
  num_heads: int = 4
  mlp_dim: int = 0


class ViViTFactorisedEncoder(nn.Module):
  """The factorised-encoder ViViT of docs/design.md §1 (see module docstring)."""
  num_classes: int
  hidden_size: int
  patches: tuple  # (h, w, t)
  spatial: EncoderSpec
  temporal: EncoderSpec
  classifier: str = 'token'
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_droplayer_rate: float = 0.0
  adapter: AdapterSpec = AdapterSpec()
  freeze_spatial: bool = False
  spatial_chunk_size: int = 0
  remat: bool = False
  temporal_remat: bool = False
  temporal_query_chunk_size: int = 0
  recompute_frozen: bool = False  # needs freeze_spatial and spatial_chunk_size
  dtype: Any = jnp.float32
  head_kernel_init: str = 'zeros'
  # '' = the input is float video already normalised; a name from
  # inputs.NORMALIZATIONS = the input is pixels in [0, 255] (uint8 from the pipelines),
  # normalised on the device (models/inputs.py).
  normalization: str = ''
  # The spatial encoder's image-tower switches (models/towers.py); the default is
  # scenic's ViT, so a default model is unchanged.
  spatial_tower: towers.TowerOptions = towers.TowerOptions()

  @property
  def _frame_classifier(self) -> str:
    """How one frame's spatial output is pooled (the temporal encoder uses `classifier`)."""
    return towers.frame_classifier(self.spatial_tower, self.classifier)

  @nn.compact
  def __call__(self, inputs, *, train: bool = False, part: str = WHOLE):
    """Logits of a video; or, with `part`, one side of the frozen boundary.

    Args:
      inputs: video (B, T, H, W, 3) for WHOLE and FROZEN_PART (pixels, uint8, when the
        model has a `normalization`; else normalised float); for TRAINABLE_PART,
        what FROZEN_PART returned: every token (B, T', 1+N, D) or, for an adapter that
        reads the pooled vector only, (B, T', D).
      train: dropout and stochastic depth on (never in the frozen part when frozen).
      part: WHOLE (logits), FROZEN_PART (embedding + spatial encoder: what the adapter
        consumes) or TRAINABLE_PART (adapter + temporal encoder + head: logits).
    """
    if part not in PARTS:
      raise ValueError(f'part={part!r}; expected one of {PARTS}.')
    if part == TRAINABLE_PART:
      return self._trainable(inputs, train)
    if inputs.ndim != 5 or inputs.shape[-1] != 3:
      raise ValueError(f'ViViT expects video of shape (B, T, H, W, 3), got {inputs.shape}.')
    if part == WHOLE and self.recompute_frozen:
      return self._temporal_and_head(self._recomputed_chunks(inputs, train), train)
    tokens = self._spatial_tokens(inputs, train)  # (B, T', 1+N, D) or (B, T', N, D)
    if self.freeze_spatial:
      # Frozen spatial path: no gradient flows into it, so autodiff keeps no residuals
      # for the embedding and spatial encoder and XLA emits no backward pass for them.
      tokens = jax.lax.stop_gradient(tokens)
    if part == FROZEN_PART:
      if adapter_lib.reads_tokens(self.adapter.type):
        return tokens
      return adapter_lib.pool_tokens(tokens, self._frame_classifier)
    return self._trainable(tokens, train)

  def _trainable(self, features, train):
    """Adapter, temporal encoder and head, from the spatial encoder's output."""
    return self._temporal_and_head(self._adapt(features, train), train)

  def _temporal_and_head(self, frames, train):
    """(B, T', D), one vector per temporal index -> logits."""
    x = self._encode_temporal(frames, train)
    return nn.Dense(self.num_classes, kernel_init=HEAD_INITS[self.head_kernel_init],
                    name=names.HEAD)(x)

  def _spatial_tokens(self, video, train):
    """(B, T, H, W, 3) video -> the spatial encoder's tokens (B, T', [1+]N, D)."""
    spatial_train = train and not self.freeze_spatial
    chunk = self.spatial_chunk_size
    if chunk and chunk < video.shape[1] // self.patches[2]:
      return self._chunked_spatial(video, spatial_train)
    return _embed_and_encode(self, video, spatial_train)

  def _model_input(self, video):
    """The video as the embedding reads it: normalised on the device (models/inputs.py)
    when the model was built with a normalization, else taken as already normalised."""
    if self.normalization:
      return inputs_lib.normalize(video, self.normalization, self.dtype)
    if not jnp.issubdtype(video.dtype, jnp.floating):
      raise ValueError(
          f'The model got {video.dtype} video but was built without a normalization: '
          'pass create_model(..., normalization=config.dataset.normalization) so that it '
          'normalises pixels on the device, or feed normalised float video.')
    return video.astype(self.dtype)

  def _embed(self, video):
    """Tubelet embedding, with the spatial CLS token prepended per temporal index."""
    ph, pw, pt = self.patches
    x = nn.Conv(self.hidden_size, (pt, ph, pw), strides=(pt, ph, pw), padding='VALID',
                use_bias=self.spatial_tower.patch_bias, dtype=self.dtype,
                name=names.EMBEDDING)(self._model_input(video))
    b, t, h, w, d = x.shape
    x = x.reshape(b, t, h * w, d)
    if towers.spatial_has_cls(self.spatial_tower, self.classifier):
      cls = self.param(names.SPATIAL_CLS, nn.initializers.zeros, (1, 1, d))
      cls = jnp.broadcast_to(cls.astype(x.dtype), (b, t, 1, d))
      x = jnp.concatenate([cls, x], axis=2)
    return x

  def _chunked_spatial(self, video, train):
    """Normalises, embeds and encodes `chunk` temporal indices at a time (a scan).

    Live activations then scale with the chunk, not with the number of frames, and
    so does the normalised (float) copy of the input: the scan reads the video as it
    came (uint8 from the pipelines) and slices its frames per iteration, so a long
    clip is never converted, transposed or copied as a whole.
    """
    b, num_frames = video.shape[:2]
    frames = self._frames_per_chunk(num_frames)

    def body(mdl, carry, clip, i):
      part = jax.lax.dynamic_slice_in_dim(clip, i * frames, frames, axis=1)
      return carry, _embed_and_encode(mdl, part, train)

    scanned = nn.scan(body, variable_broadcast='params',
                      split_rngs={'params': False, 'dropout': True},
                      in_axes=(nn.broadcast, 0), out_axes=0)
    _, y = scanned(self, None, video, jnp.arange(num_frames // frames))
    n, d = y.shape[-2:]  # y: (chunks, B, chunk, [1+]N, D)
    return y.swapaxes(0, 1).reshape(b, -1, n, d)

  def _frames_per_chunk(self, num_frames: int) -> int:
    frames = self.spatial_chunk_size * self.patches[2]
    if num_frames % frames:
      raise ValueError(
          f'config.model.spatial_chunk_size={self.spatial_chunk_size} must divide the '
          f'number of temporal indices ({num_frames // self.patches[2]} = frames / '
          'tubelet length).')
    return frames

  def _recomputed_chunks(self, video, train):
    """Frozen embedding + spatial encoder + adapter, per chunk, storing nothing.

    `config.model.recompute_frozen`: one scan over chunks of temporal indices runs the
    frozen pass and the adapter and keeps only the adapter's (B, chunk, D) output;
    the body is rematerialised, so the backward pass recomputes the chunk's frozen
    tokens instead of keeping them. Unlike `_chunked_spatial` + `_chunked_adapter`,
    the (B, T', 1+N, D) frozen tokens never exist: at 4096 frames and batch 8 they are
    4.6 GiB in bfloat16. The price is a second frozen forward pass per step.
    """
    b, num_frames = video.shape[:2]
    frames = self._frames_per_chunk(num_frames)

    def body(mdl, carry, clip, i):
      part = jax.lax.dynamic_slice_in_dim(clip, i * frames, frames, axis=1)
      tokens = jax.lax.stop_gradient(_embed_and_encode(mdl, part, False))
      return carry, mdl._adapt(tokens, train)  # pylint: disable=protected-access

    scanned = nn.scan(nn.remat(body, prevent_cse=False), variable_broadcast='params',
                      split_rngs={'params': False, 'dropout': True},
                      in_axes=(nn.broadcast, 0), out_axes=0)
    _, y = scanned(self, None, video, jnp.arange(num_frames // frames))
    return y.swapaxes(0, 1).reshape(b, -1, y.shape[-1])  # (B, T', D)

  def _adapt(self, tokens, train):
    """(B, T', 1+N, D) tokens, or (B, T', D) pooled vectors -> (B, T', D)."""
    pooled_input = tokens.ndim == 3
    if pooled_input and adapter_lib.reads_tokens(self.adapter.type):
      raise ValueError(
          f'The {self.adapter.type!r} adapter reads every token of a temporal index, but '
          f'it got pooled vectors of shape {tokens.shape}: extract a feature cache with '
          'this adapter type (it stores every token).')
    chunk = self.spatial_chunk_size
    chunked = (self.adapter.type == 'attention' and chunk and chunk < tokens.shape[1])
    module = adapter_lib.make_adapter(
        self.adapter, self.hidden_size, self._frame_classifier,
        dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        deterministic=not train, dtype=self.dtype, scan_chunks=chunked)
    if module is None or isinstance(module, adapter_lib.MlpAdapter):
      pooled = (tokens if pooled_input
                else adapter_lib.pool_tokens(tokens, self._frame_classifier))
      return pooled if module is None else module(pooled)
    if chunked:
      return self._chunked_adapter(module, tokens, chunk)
    return module(tokens)

  @staticmethod
  def _chunked_adapter(scanned, tokens, chunk):
    """Runs the attention adapter `chunk` temporal indices at a time, rematerialised.

    The adapter attends over every token of every index and it is trained, so
    unchunked its backward pass keeps activations over all 1+N tokens of all T'
    indices: at long clips they, not the frozen encoder, dominate a stage-2 step's
    memory. Under a scan with `remat`, each iteration keeps only its input chunk (the
    frozen tokens, stored anyway) and recomputes the rest in the backward pass, so
    the adapter's live activations scale with the chunk, not with the frames. (A
    `remat` alone does not do it: nothing stops XLA from scheduling the recompute
    early; the scan's loop order does.)
    """
    b, t, n, d = tokens.shape
    chunks = tokens.reshape(b, t // chunk, chunk, n, d).swapaxes(0, 1)
    _, y = scanned(None, chunks)  # (t/chunk, b, chunk, d)
    return y.swapaxes(0, 1).reshape(b, t, d)

  def _encode_temporal(self, x, train):
    """Prepends the temporal CLS token, encodes and pools (scenic's `vit_body`)."""
    if self.classifier == 'token':
      cls = self.param(names.cls_token(names.TEMPORAL), nn.initializers.zeros,
                       (1, 1, x.shape[-1]))
      cls = jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
      x = jnp.concatenate([cls, x], axis=1)
    x = self._encoder(self.temporal, names.TEMPORAL, train,
                      remat=self.remat or self.temporal_remat,
                      query_chunk_size=self.temporal_query_chunk_size)(x)
    return adapter_lib.pool_tokens(x, self.classifier)

  def _encoder(self, spec: EncoderSpec, name: str, train: bool, *,
               remat: Optional[bool] = None, query_chunk_size: int = 0,
               tower: towers.TowerOptions = towers.TowerOptions()):
    return layers.Encoder(
        num_layers=spec.num_layers, mlp_dim=spec.mlp_dim, num_heads=spec.num_heads,
        dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        stochastic_droplayer_rate=self.stochastic_droplayer_rate,
        remat=self.remat if remat is None else remat, deterministic=not train,
        dtype=self.dtype, query_chunk_size=query_chunk_size, tower=tower, name=name)


def _embed_and_encode(mdl: ViViTFactorisedEncoder, video, train):
  """Embedding + spatial encoder over every temporal index of `video`: (B, T', n, D).

  A function of the module rather than a method, so that the chunked path can lift it
  into `nn.scan` with the parameters keeping their top-level (scenic) names.
  """
  x = mdl._embed(video)  # pylint: disable=protected-access
  b, t, n, d = x.shape
  x = mdl._encoder(mdl.spatial, names.SPATIAL, train,  # pylint: disable=protected-access
                   tower=mdl.spatial_tower)(x.reshape(b * t, n, d))
  return x.reshape(b, t, x.shape[1], d)  # a tower's readout may change the token count
