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
  # The spatial dial (docs/design.md §2d), with freeze_spatial: the top k spatial layers
  # and the encoder norm train, the embedding and the layers below them stay frozen.
  # 0 = every spatial layer frozen (the paper's stage 2).
  trainable_spatial_layers: int = 0
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
        reads the pooled vector only and no trainable spatial layer, (B, T', D).
      train: dropout and stochastic depth on (never in the frozen part when frozen).
      part: WHOLE (logits), FROZEN_PART (embedding + the frozen spatial layers: what
        the trainable part consumes) or TRAINABLE_PART (the trainable spatial layers,
        if any, + adapter + temporal encoder + head: logits).
    """
    if part not in PARTS:
      raise ValueError(f'part={part!r}; expected one of {PARTS}.')
    if part == TRAINABLE_PART:
      return self._trainable(inputs, train)
    if inputs.ndim != 5 or inputs.shape[-1] != 3:
      raise ValueError(f'ViViT expects video of shape (B, T, H, W, 3), got {inputs.shape}.')
    if part == WHOLE and self.recompute_frozen:
      return self._temporal_and_head(self._recomputed_chunks(inputs, train), train)
    # (B, T', 1+N, D) or (B, T', N, D)
    tokens = self._spatial_tokens(inputs, train, below_dial=part == FROZEN_PART)
    if part == FROZEN_PART:
      if self.trainable_spatial_layers or adapter_lib.reads_tokens(self.adapter.type):
        return tokens
      return adapter_lib.pool_tokens(tokens, self._frame_classifier)
    return self._adapt_temporal_head(tokens, train)

  @property
  def dial(self) -> int:
    """The first spatial layer that trains; num_layers when every layer is frozen (or
    none is: the dial splits a frozen spatial encoder only)."""
    if not self.freeze_spatial:
      return self.spatial.num_layers
    return self.spatial.num_layers - self.trainable_spatial_layers

  def _trainable(self, features, train):
    """The trainable spatial layers (above the dial), adapter, temporal encoder and
    head, from what FROZEN_PART returned."""
    if self.dial < self.spatial.num_layers:
      b, t, n, d = features.shape
      top = _spatial_encoder(self, train).above_dial(features.reshape(b * t, n, d))
      features = top.reshape(b, t, top.shape[1], d)  # a tower's readout changes the count
    return self._adapt_temporal_head(features, train)

  def _adapt_temporal_head(self, tokens, train):
    return self._temporal_and_head(self._adapt(tokens, train), train)

  def _temporal_and_head(self, frames, train):
    """(B, T', D), one vector per temporal index -> logits."""
    x = self._encode_temporal(frames, train)
    return nn.Dense(self.num_classes, kernel_init=HEAD_INITS[self.head_kernel_init],
                    name=names.HEAD)(x)

  def _spatial_tokens(self, video, train, below_dial=False):
    """(B, T, H, W, 3) video -> the spatial encoder's tokens (B, T', [1+]N, D); or,
    `below_dial`, the tokens after the frozen layers (the input of the trainable ones)."""
    chunk = self.spatial_chunk_size
    if chunk and chunk < video.shape[1] // self.patches[2]:
      return self._chunked_spatial(video, train, below_dial)
    return _embed_and_encode(self, video, train, below_dial)

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

  def _chunked_spatial(self, video, train, below_dial):
    """Normalises, embeds and encodes `chunk` temporal indices at a time (a scan).

    Live activations then scale with the chunk, not with the number of frames, and
    so does the normalised (float) copy of the input: the scan reads the video as it
    came (uint8 from the pipelines) and slices its frames per iteration, so a long
    clip is never converted, transposed or copied as a whole. With the dial, the
    trainable top layers run in the same iteration, above the chunk's frozen tokens:
    each spatial layer sees one temporal index at a time, so chunking changes nothing
    for them, and their backward pass runs per chunk too (the scan's, above the
    stop_gradient) while the frozen layers below still get none.
    """
    b, num_frames = video.shape[:2]
    frames = self._frames_per_chunk(num_frames)

    def body(mdl, carry, clip, i):
      part = jax.lax.dynamic_slice_in_dim(clip, i * frames, frames, axis=1)
      return carry, _embed_and_encode(mdl, part, train, below_dial)

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
    4.6 GiB in bfloat16. The price is a second frozen forward pass per step. With the
    dial, the trainable top spatial layers run in the same body (and are recomputed
    with it), between the frozen tokens and the adapter.
    """
    b, num_frames = video.shape[:2]
    frames = self._frames_per_chunk(num_frames)

    def body(mdl, carry, clip, i):
      part = jax.lax.dynamic_slice_in_dim(clip, i * frames, frames, axis=1)
      tokens = _embed_and_encode(mdl, part, train)
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


def _embed_and_encode(mdl: ViViTFactorisedEncoder, video, train, below_dial=False):
  """Embedding + spatial encoder over every temporal index of `video`: (B, T', n, D);
  `below_dial`: the frozen layers only.

  A function of the module rather than a method, so that the chunked path can lift it
  into `nn.scan` with the parameters keeping their top-level (scenic) names.
  """
  x = mdl._embed(video)  # pylint: disable=protected-access
  b, t, n, d = x.shape
  enc = _spatial_encoder(mdl, train)
  x = enc.below_dial(x.reshape(b * t, n, d))
  if not below_dial:
    x = enc.above_dial(x)
  return x.reshape(b, t, x.shape[1], d)  # registers, or a tower's readout, change the count


class _SplitSpatial(NamedTuple):
  """The spatial encoder cut at the dial: one `layers.Encoder` instance called on each
  side, so both sides keep scenic's names (`SpatialTransformer/encoderblock_i`)."""
  encoder: Any
  dial: int
  num_layers: int
  train: bool
  frozen: bool

  def below_dial(self, x):
    """Embedded tokens -> the output of layer dial - 1 (of the whole encoder, norm
    included, when nothing is frozen or every layer is)."""
    if not self.frozen:
      return self.encoder(x, deterministic=not self.train)
    # Frozen: no gradient flows into this side, so autodiff keeps no residuals for the
    # embedding and the frozen layers and XLA emits no backward pass for them; nor do
    # they drop out, so their output is a pure function of the view (cacheable).
    return jax.lax.stop_gradient(self.encoder(x, stop=self.dial, deterministic=True))

  def above_dial(self, x):
    """The dial's tokens -> the encoder's output: the trainable top layers and norm."""
    if self.dial == self.num_layers:
      return x
    return self.encoder(x, start=self.dial, above=True, deterministic=not self.train)


def _spatial_encoder(mdl: ViViTFactorisedEncoder, train) -> _SplitSpatial:
  # pylint: disable=protected-access
  enc = mdl._encoder(mdl.spatial, names.SPATIAL, train, tower=mdl.spatial_tower)
  return _SplitSpatial(enc, mdl.dial, mdl.spatial.num_layers, train, mdl.freeze_spatial)
