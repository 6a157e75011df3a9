"""The ViViT factorised encoder written plainly in PyTorch, as a speed reference.

The benchmark issue's target is that our end-to-end train step is not slower than a
straightforward PyTorch implementation of the same model on the same CPU. This is that
implementation: the modules a PyTorch user would write (a Conv3d tubelet embedding, a
fused qkv `nn.Linear` with `F.scaled_dot_product_attention`, `nn.LayerNorm`,
`nn.GELU(approximate='tanh')`), no fusions or tricks of our own. It supports only what
the end-to-end baseline uses: CLS-token pooling, no adapter, no dropout.

`load_flax_params` copies a parameter tree of `vivit_adapter.models` (scenic's names)
into it, so both frameworks compute the same function and time the same work.
"""

from typing import Dict, Mapping, NamedTuple, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vivit_adapter.models import names

LAYER_NORM_EPS = 1e-6  # flax's LayerNorm default, which scenic's ViViT uses.


class EncoderSize(NamedTuple):
  num_layers: int
  num_heads: int
  mlp_dim: int


class Attention(nn.Module):
  """Multi-head self-attention: fused qkv projection, SDPA, output projection."""

  def __init__(self, width: int, num_heads: int):
    super().__init__()
    if width % num_heads:
      raise ValueError(f'width {width} is not divisible by num_heads {num_heads}.')
    self.num_heads = num_heads
    self.qkv = nn.Linear(width, 3 * width)
    self.proj = nn.Linear(width, width)

  def forward(self, x):
    b, n, d = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (b, heads, n, head_dim)
    y = F.scaled_dot_product_attention(q, k, v)
    return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
  """Pre-norm transformer block: x + attn(LN(x)); x + mlp(LN(x))."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
    self.attn = Attention(width, num_heads)
    self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
    self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(approximate='tanh'),
                             nn.Linear(mlp_dim, width))

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
  """CLS token, learned position embedding, blocks, final norm; returns the CLS output."""

  def __init__(self, width: int, num_tokens: int, size: EncoderSize):
    super().__init__()
    self.cls = nn.Parameter(torch.zeros(1, 1, width))
    self.pos_embedding = nn.Parameter(torch.randn(1, num_tokens + 1, width) * 0.02)
    self.blocks = nn.ModuleList(
        [Block(width, size.num_heads, size.mlp_dim) for _ in range(size.num_layers)])
    self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

  def forward(self, x):
    x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + self.pos_embedding
    for block in self.blocks:
      x = block(x)
    return self.norm(x)[:, 0]


class TorchViViTFE(nn.Module):
  """ViViT factorised encoder: tubelets -> spatial encoder -> temporal encoder -> head.

  Args:
    num_classes: width of the head.
    hidden_size: token width D.
    patches: tubelet size (h, w, t), the order of `config.model.patches.size`.
    spatial, temporal: the two encoders' sizes.
    input_shape: (frames, height, width) of the videos; fixes the position embeddings.
  """

  def __init__(self, num_classes: int, hidden_size: int, patches: Tuple[int, int, int],
               spatial: EncoderSize, temporal: EncoderSize,
               input_shape: Tuple[int, int, int]):
    super().__init__()
    ph, pw, pt = patches
    frames, height, width = input_shape
    if frames % pt or height % ph or width % pw:
      raise ValueError(f'input (frames, height, width)={input_shape} is not divisible by '
                       f'the tubelet (t, h, w)=({pt}, {ph}, {pw}).')
    self.embedding = nn.Conv3d(3, hidden_size, kernel_size=(pt, ph, pw),
                               stride=(pt, ph, pw))
    num_patches = (height // ph) * (width // pw)
    self.spatial = Encoder(hidden_size, num_patches, EncoderSize(*spatial))
    self.temporal = Encoder(hidden_size, frames // pt, EncoderSize(*temporal))
    self.head = nn.Linear(hidden_size, num_classes)

  def forward(self, video):
    """(B, T, H, W, 3) channels-last video, as the JAX model takes it -> (B, classes)."""
    x = self.embedding(video.permute(0, 4, 1, 2, 3))  # (B, D, T', H', W')
    b, d, t = x.shape[:3]
    x = x.flatten(3).permute(0, 2, 3, 1).reshape(b * t, -1, d)  # (B*T', N, D)
    x = self.spatial(x).reshape(b, t, d)  # the CLS output of every temporal index
    return self.head(self.temporal(x))


def _linear(dense) -> Dict[str, np.ndarray]:
  """flax Dense {kernel (in, out), bias} -> torch Linear {weight (out, in), bias}."""
  return {'weight': np.asarray(dense['kernel']).T, 'bias': np.asarray(dense['bias'])}


def _layer_norm(norm) -> Dict[str, np.ndarray]:
  return {'weight': np.asarray(norm['scale']), 'bias': np.asarray(norm['bias'])}


def _attention(mha) -> Dict[str, np.ndarray]:
  """flax MultiHeadDotProductAttention -> fused qkv Linear + output Linear.

  query/key/value kernels are (D, heads, head_dim); flattened to (D, D) their columns
  are head-major, the order in which `Attention.forward` splits the heads.
  """
  width = np.asarray(mha['query']['kernel']).shape[0]
  qkv = [(np.asarray(mha[n]['kernel']).reshape(width, -1).T,
          np.asarray(mha[n]['bias']).reshape(-1)) for n in ('query', 'key', 'value')]
  return {
      'qkv.weight': np.concatenate([w for w, _ in qkv], axis=0),
      'qkv.bias': np.concatenate([b for _, b in qkv], axis=0),
      'proj.weight': np.asarray(mha['out']['kernel']).reshape(-1, width).T,
      'proj.bias': np.asarray(mha['out']['bias']),
  }


def _prefixed(prefix: str, tensors: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  return {f'{prefix}.{name}': value for name, value in tensors.items()}


def _block(block) -> Dict[str, np.ndarray]:
  out = {}
  out.update(_prefixed('norm1', _layer_norm(block[names.ATTENTION_NORM])))
  out.update(_prefixed('attn', _attention(block[names.ATTENTION])))
  out.update(_prefixed('norm2', _layer_norm(block[names.MLP_NORM])))
  out.update(_prefixed('mlp.0', _linear(block[names.MLP][names.MLP_IN])))
  out.update(_prefixed('mlp.2', _linear(block[names.MLP][names.MLP_OUT])))
  return out


def _encoder(encoder, cls) -> Dict[str, np.ndarray]:
  out = {'cls': np.asarray(cls),
         'pos_embedding': np.asarray(encoder[names.POSEMB_MODULE][names.POSEMB_PARAM])}
  num_layers = sum(name.startswith(names.BLOCK_PREFIX) for name in encoder)
  for i in range(num_layers):
    out.update(_prefixed(f'blocks.{i}', _block(encoder[names.encoder_block(i)])))
  out.update(_prefixed('norm', _layer_norm(encoder[names.ENCODER_NORM])))
  return out


# The end-to-end model: no adapter, 'token' classifier (both CLS tokens).
_EXPECTED_TOP_LEVEL = names.SPATIAL_GROUP + names.TEMPORAL_GROUP + names.HEAD_GROUP


def flax_to_torch_state_dict(flax_params: Mapping) -> Dict[str, torch.Tensor]:
  """A `TorchViViTFE` state dict holding the values of a Flax ViViT-FE parameter tree.

  The map is linear, so it also converts a tree of gradients into torch's layout.
  Only the end-to-end model (adapter type 'none', classifier 'token') is supported.
  """
  top_level = set(flax_params)
  if top_level != set(_EXPECTED_TOP_LEVEL):
    raise ValueError(
        f'Flax parameter tree has top-level names {sorted(top_level)}; TorchViViTFE needs '
        f'exactly {sorted(_EXPECTED_TOP_LEVEL)} (adapter type "none", classifier '
        f'"token"). Extra: {sorted(top_level - set(_EXPECTED_TOP_LEVEL))}, missing: '
        f'{sorted(set(_EXPECTED_TOP_LEVEL) - top_level)}.')
  emb = flax_params[names.EMBEDDING]
  state = {
      # (t, h, w, c, D) -> Conv3d's (D, c, t, h, w)
      'embedding.weight': np.asarray(emb['kernel']).transpose(4, 3, 0, 1, 2),
      'embedding.bias': np.asarray(emb['bias']),
  }
  state.update(_prefixed('spatial', _encoder(flax_params[names.SPATIAL],
                                             flax_params[names.SPATIAL_CLS])))
  state.update(_prefixed('temporal', _encoder(flax_params[names.TEMPORAL],
                                              flax_params[names.TEMPORAL_CLS])))
  state.update(_prefixed('head', _linear(flax_params[names.HEAD])))
  return {name: torch.tensor(np.asarray(value, dtype=np.float32))
          for name, value in state.items()}


def load_flax_params(torch_model: TorchViViTFE, flax_params: Mapping) -> None:
  """Copies a Flax ViViT-FE parameter tree into `torch_model` (in place).

  Raises ValueError naming every parameter whose shape differs (e.g. a model built for
  another number of frames or another resolution) and every missing/unexpected name.
  """
  state = flax_to_torch_state_dict(flax_params)
  own = torch_model.state_dict()
  missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
  mismatched = [f'{n}: flax gives {tuple(state[n].shape)}, torch model has '
                f'{tuple(own[n].shape)}' for n in sorted(set(own) & set(state))
                if state[n].shape != own[n].shape]
  if missing or unexpected or mismatched:
    raise ValueError(
        'Flax parameters do not fit this TorchViViTFE (build it with the same sizes, '
        f'frames and resolution). Missing: {missing}; unexpected: {unexpected}; '
        f'shape mismatches: {mismatched}.')
  torch_model.load_state_dict(state)


def from_model_config(model_config, num_classes: int,
                      input_shape: Tuple[int, int, int]) -> TorchViViTFE:
  """The `TorchViViTFE` with the sizes of `config.model` (a variant is expanded when the config is built).

  Raises ValueError for settings that change what is trained and that this reference
  does not implement (adapter, frozen spatial encoder, dropout, 'gap', bfloat16).
  """
  cfg = model_config
  unsupported = {
      'classifier': (cfg.classifier, 'token'), 'adapter.type': (cfg.adapter.type, 'none'),
      'freeze_spatial': (cfg.freeze_spatial, False), 'dtype': (cfg.dtype, 'float32'),
      'dropout_rate': (cfg.dropout_rate, 0.0),
      'attention_dropout_rate': (cfg.attention_dropout_rate, 0.0),
      'stochastic_droplayer_rate': (cfg.stochastic_droplayer_rate, 0.0)}
  wrong = [f'config.model.{k}={v!r} (needs {want!r})'
           for k, (v, want) in unsupported.items() if v != want]
  if wrong:
    raise ValueError('TorchViViTFE implements the plain end-to-end model only: '
                     + '; '.join(wrong) + '.')
  def size(enc):
    return EncoderSize(enc.num_layers, enc.num_heads, enc.mlp_dim)
  return TorchViViTFE(num_classes, cfg.hidden_size,
                      tuple(int(p) for p in cfg.patches.size),
                      size(cfg.spatial_transformer), size(cfg.temporal_transformer),
                      input_shape)
