"""The adapter between frozen spatial features and the temporal encoder (docs/design.md §3).

Every adapter maps the spatial encoder's tokens of one temporal index, (..., 1+N, D),
to one vector (..., D). Its residual branch ends in a zero-initialised projection, so
at initialisation the adapter returns the frozen representation unchanged and a
stage-2 model computes exactly what its stage-1 model computed.
"""

import flax.linen as nn
import jax.numpy as jnp

from vivit_adapter.models import layers
from vivit_adapter.models import names

ADAPTER_TYPES = ('attention', 'mlp', 'none')
# The adapters that read every token of a temporal index; the others read its pooled
# vector only, which is all a feature cache must store for them.
READS_TOKENS = ('attention',)


def reads_tokens(adapter_type: str) -> bool:
  return adapter_type in READS_TOKENS


def pool_tokens(tokens, classifier: str):
  """The spatial representation of one temporal index: CLS token or token mean."""
  if classifier == 'token':
    return tokens[..., 0, :]
  return jnp.mean(tokens, axis=-2)


class MlpAdapter(nn.Module):
  """Bottleneck MLP on the pooled spatial vector, added back as a residual."""
  hidden_size: int
  classifier: str = 'token'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pooled):
    """(..., D) pooled spatial vectors -> (..., D)."""
    y = nn.LayerNorm(dtype=self.dtype, name='norm')(pooled)
    y = nn.Dense(self.hidden_size, dtype=self.dtype, name='down')(y)
    y = nn.gelu(y)
    y = nn.Dense(pooled.shape[-1], dtype=self.dtype,
                 kernel_init=nn.initializers.zeros, name='up')(y)
    return pooled + y


class AttentionAdapter(nn.Module):
  """A bottleneck transformer block over all tokens of one temporal index.

  The tokens are projected down to `hidden_size`, go through one pre-norm attention +
  MLP block (so the adapter can attend to the image regions that matter for the
  action), and the block's pooled output is projected back up and added to the frozen
  pooled vector.
  """
  hidden_size: int
  num_heads: int
  mlp_dim: int
  classifier: str = 'token'
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  deterministic: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    return _attention_adapter(self, tokens)


class ScanAttentionAdapter(AttentionAdapter):
  """`AttentionAdapter` with the (carry, x) -> (carry, y) signature `nn.scan` expects.

  Same parameter names as `AttentionAdapter`, so a chunked model (one chunk of
  temporal indices per scan iteration, parameters broadcast) shares its weights.
  """

  @nn.compact
  def __call__(self, carry, tokens):
    return carry, _attention_adapter(self, tokens)


def _attention_adapter(mdl: AttentionAdapter, tokens):
  """The body shared by both adapter classes; called inside their compact scope."""
  pooled = pool_tokens(tokens, mdl.classifier)
  lead, (n, d) = tokens.shape[:-2], tokens.shape[-2:]
  x = tokens.reshape((-1, n, d))
  x = nn.LayerNorm(dtype=mdl.dtype, name='norm')(x)
  x = nn.Dense(mdl.hidden_size, dtype=mdl.dtype, name='down')(x)
  x = layers.EncoderBlock(
      mlp_dim=mdl.mlp_dim, num_heads=mdl.num_heads,
      dropout_rate=mdl.dropout_rate,
      attention_dropout_rate=mdl.attention_dropout_rate,
      deterministic=mdl.deterministic, dtype=mdl.dtype, name='block')(x)
  x = pool_tokens(x, mdl.classifier).reshape(lead + (mdl.hidden_size,))
  x = nn.LayerNorm(dtype=mdl.dtype, name='out_norm')(x)
  x = nn.Dense(d, dtype=mdl.dtype, kernel_init=nn.initializers.zeros, name='up')(x)
  return pooled + x


def make_adapter(adapter_config, hidden_size: int, classifier: str, *,
                 dropout_rate: float, attention_dropout_rate: float,
                 deterministic: bool, dtype, scan_chunks: bool = False):
  """Builds the adapter module named by `adapter_config.type`, or None for 'none'.

  `scan_chunks` (attention adapter only) returns it as a rematerialised `nn.scan`
  over a leading axis of chunks: called as `(None, chunks) -> (None, outputs)`.
  The type is one of ADAPTER_TYPES (`models.check_choices` checks the config); every
  type is matched by name, so an unknown one can never fall through to a real adapter.
  """
  kind = adapter_config.type
  if kind == 'none':
    return None
  width = adapter_config.hidden_size or max(hidden_size // 4, 1)
  if kind == 'mlp':
    return MlpAdapter(width, classifier, dtype, name=names.ADAPTER)
  if kind != 'attention':
    raise ValueError(f'config.model.adapter.type={kind!r}; expected one of {ADAPTER_TYPES}.')
  if width % adapter_config.num_heads:
    raise ValueError(
        f'config.model.adapter.hidden_size={width} is not divisible by '
        f'config.model.adapter.num_heads={adapter_config.num_heads}.')
  cls = AttentionAdapter
  if scan_chunks:
    cls = nn.scan(nn.remat(ScanAttentionAdapter), variable_broadcast='params',
                  split_rngs={'params': False, 'dropout': True}, in_axes=0, out_axes=0)
  return cls(
      hidden_size=width, num_heads=adapter_config.num_heads,
      mlp_dim=adapter_config.mlp_dim or 4 * width, classifier=classifier,
      dropout_rate=dropout_rate, attention_dropout_rate=attention_dropout_rate,
      deterministic=deterministic, dtype=dtype, name=names.ADAPTER)
