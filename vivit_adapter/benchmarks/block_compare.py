r"""Times one transformer block (forward + backward) in several JAX formulations and in torch.

  python -m vivit_adapter.benchmarks.block_compare [--width=768 --heads=12 --mlp_dim=3072
      --tokens=197 --sequences=16] [--dtype=float32|bfloat16] [--reps=8] [--out=PREFIX]

The end-to-end step of ViViT-B is 12 spatial blocks over (frames/2) sequences of 197
tokens plus little else (`step_profile`), so one block at those shapes is where a
formulation that is faster on a CPU shows, in a second instead of minutes. The JAX
variants compute the same function from the same parameter tree (flax's `query`, `key`,
`value`, `out` names and shapes; `tests/test_block_compare.py` checks outputs and
gradients against the project's `EncoderBlock`):

* `flax`: the project's block (`layers.EncoderBlock`: flax's MultiHeadDotProductAttention,
  three (D, H, d) projections, logits in (B, H, L, L) from a (B, L, H, d) einsum);
* `fused_qkv`: q, k and v as one (D, 3D) matmul, the kernels concatenated at trace time;
* `bhld`: the attention core with q, k and v moved to (B, H, L, d) before the einsums;
* `fused_qkv+bhld`: both;
* `jax_nn`: `jax.nn.dot_product_attention` (XLA implementation) as the core;
* `torch`: the same block in eager PyTorch (fused qkv `nn.Linear`, SDPA), under
  `torch.autocast` for bfloat16, on the same threads.

Timed steps are interleaved (flax, fused_qkv, ..., torch, flax, ...) so that load from
other processes hits every variant alike; the report gives medians and ratios to `flax`
and to `torch`. XLA flags apply to the whole process: compare them by running the
command once per `XLA_FLAGS` value and reading each run's ratio to torch (which no XLA
flag touches).
"""

import functools
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, Sequence

from absl import app
from absl import flags
import flax.linen as nn  # the variants are flax modules, defined at import
import jax
import jax.numpy as jnp

from data_pipelines import cli
from vivit_adapter.benchmarks import torch_compare
from vivit_adapter.models import layers
from vivit_adapter.models import names

torch = cli.lazy_module('torch')  # loaded on first use

JAX_VARIANTS = ('flax', 'fused_qkv', 'bhld', 'fused_qkv+bhld', 'jax_nn')
VARIANTS = JAX_VARIANTS + ('torch',)
_QKV = ('query', 'key', 'value')


def _dtype(name: str):
  if name not in ('float32', 'bfloat16'):
    raise ValueError(f'--dtype={name}: choose float32 or bfloat16.')
  return jnp.bfloat16 if name == 'bfloat16' else jnp.float32


def bhld_core(query, key, value, dtype=None, **unused):
  """Softmax attention with q, k, v moved to (batch, heads, length, depth) first."""
  del dtype, unused
  q, k, v = (jnp.swapaxes(t, -2, -3) for t in (query, key, value))
  logits = jnp.einsum('...hqd,...hkd->...hqk', q / jnp.sqrt(q.shape[-1]).astype(q.dtype), k)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.swapaxes(jnp.einsum('...hqk,...hkd->...hqd', weights, v), -2, -3)


def jax_nn_core(query, key, value, dtype=None, **unused):
  del dtype, unused
  return jax.nn.dot_product_attention(query, key, value, implementation='xla')


def flax_core(query, key, value, dtype=None, **unused):
  del unused
  return nn.dot_product_attention(query, key, value, dtype=dtype,
                                  force_fp32_for_softmax=True)


class _SelfAttention(nn.Module):
  """Self-attention with flax's parameters; q/k/v fused into one matmul or not."""
  num_heads: int
  fused_qkv: bool
  core: Callable
  dtype: object

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    dense = functools.partial(nn.DenseGeneral, features=(self.num_heads, d // self.num_heads),
                              kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype)
    if self.fused_qkv:
      if self.is_initializing():
        for name in _QKV:
          dense(name=name)(x)
      p = self.variables['params']
      kernel = jnp.concatenate([p[n]['kernel'].reshape(d, d) for n in _QKV], axis=1)
      bias = jnp.concatenate([p[n]['bias'].reshape(d) for n in _QKV])
      qkv = x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)
      qkv = qkv.reshape(x.shape[:-1] + (3, self.num_heads, d // self.num_heads))
      q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    else:
      q, k, v = (dense(name=n)(x) for n in _QKV)
    y = self.core(q, k, v, dtype=self.dtype)
    return nn.DenseGeneral(d, axis=(-2, -1), kernel_init=nn.initializers.xavier_uniform(),
                           dtype=self.dtype, name='out')(y)


class VariantBlock(nn.Module):
  """`layers.EncoderBlock`'s structure and parameter names with another attention."""
  mlp_dim: int
  num_heads: int
  fused_qkv: bool
  core: Callable
  dtype: object = None

  @nn.compact
  def __call__(self, inputs):
    x = nn.LayerNorm(dtype=self.dtype, name=names.ATTENTION_NORM)(inputs)
    x = _SelfAttention(self.num_heads, self.fused_qkv, self.core, self.dtype,
                       name=names.ATTENTION)(x) + inputs
    y = nn.LayerNorm(dtype=self.dtype, name=names.MLP_NORM)(x)
    return x + layers.MlpBlock(self.mlp_dim, dtype=self.dtype, name=names.MLP)(y)


def make_block(variant: str, mlp_dim: int, num_heads: int, dtype):
  """The flax module of one JAX variant."""
  if variant == 'flax':
    return layers.EncoderBlock(mlp_dim=mlp_dim, num_heads=num_heads, dtype=dtype)
  cores = {'fused_qkv': flax_core, 'bhld': bhld_core, 'fused_qkv+bhld': bhld_core,
           'jax_nn': jax_nn_core}
  if variant not in cores:
    raise ValueError(f'Unknown variant {variant!r}: choose from {VARIANTS}.')
  return VariantBlock(mlp_dim, num_heads, fused_qkv=variant.startswith('fused_qkv'),
                      core=cores[variant], dtype=dtype)


def _loss(module, params, x):
  return jnp.sum(jnp.square(module.apply(params, x).astype(jnp.float32))) * 1e-6


def jax_runner(variant: str, params, x, mlp_dim: int, num_heads: int, dtype) -> Callable:
  """A no-argument callable: one jitted forward + backward (gradients of params and x)."""
  module = make_block(variant, mlp_dim, num_heads, dtype)
  grad = jax.jit(jax.grad(functools.partial(_loss, module), argnums=(0, 1)))
  return lambda: jax.block_until_ready(grad(params, x))


def _torch_block(width: int, heads: int, mlp_dim: int):
  """The same block in plain PyTorch: fused qkv Linear, SDPA, tanh GELU (scenic's)."""

  class Block(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
      self.qkv, self.out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
      self.mlp_in, self.mlp_out = (torch.nn.Linear(width, mlp_dim),
                                   torch.nn.Linear(mlp_dim, width))

    def forward(self, x):
      b, length, _ = x.shape
      qkv = self.qkv(self.norm1(x)).reshape(b, length, 3, heads, width // heads)
      q, k, v = qkv.permute(2, 0, 3, 1, 4)
      y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
      x = x + self.out(y.transpose(1, 2).reshape(b, length, width))
      return x + self.mlp_out(torch.nn.functional.gelu(self.mlp_in(self.norm2(x)), approximate='tanh'))

  return Block()


def torch_runner(x, width: int, heads: int, mlp_dim: int, bfloat16: bool) -> Callable:
  block = _torch_block(width, heads, mlp_dim)
  tx = torch.from_numpy(jax.device_get(x).astype('float32')).requires_grad_(True)

  def run():
    block.zero_grad(set_to_none=True)
    tx.grad = None
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bfloat16):
      out = block(tx)
    (out.float().square().sum() * 1e-6).backward()

  return run


def block_flops(width: int, heads: int, mlp_dim: int, tokens: int, sequences: int) -> float:
  """Matmul FLOPs of one forward + backward (backward = 2x forward)."""
  del heads
  per_token = 2 * (4 * width * width + 2 * width * mlp_dim)  # q, k, v, out; MLP in, out
  attention = 2 * 2 * tokens * tokens * width  # logits and weighted sum, all heads
  return 3 * sequences * (tokens * per_token + attention)


def compare(variants: Sequence[str], width: int, heads: int, mlp_dim: int, tokens: int,
            sequences: int, dtype: str, reps: int, warmup: int = 2) -> Dict[str, object]:
  """Times the variants interleaved; returns a JSON-able dict of medians and ratios."""
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown or not variants:
    raise ValueError(f'--variants={",".join(variants)}: choose some of {VARIANTS}.')
  if reps < 1 or warmup < 1 or width % heads:
    raise ValueError(f'reps={reps} and warmup={warmup} must be >= 1 and width={width} '
                     f'a multiple of heads={heads}.')
  jdtype = _dtype(dtype)
  x = jax.random.normal(jax.random.PRNGKey(0), (sequences, tokens, width), jnp.float32)
  params = layers.EncoderBlock(mlp_dim=mlp_dim, num_heads=heads, dtype=jdtype).init(
      jax.random.PRNGKey(1), x)
  runners = {v: (torch_runner(x, width, heads, mlp_dim, dtype == 'bfloat16') if v == 'torch'
                 else jax_runner(v, params, x, mlp_dim, heads, jdtype)) for v in variants}
  for run in runners.values():  # compilation, caches
    for _ in range(warmup):
      run()
  seconds = {v: [] for v in runners}
  for _ in range(reps):
    for v, run in runners.items():
      start = time.perf_counter()
      run()
      seconds[v].append(time.perf_counter() - start)
  flops = block_flops(width, heads, mlp_dim, tokens, sequences)
  result = dict(width=width, heads=heads, mlp_dim=mlp_dim, tokens=tokens,
                sequences=sequences, dtype=dtype, reps=reps, flops=flops,
                xla_flags=os.environ.get('XLA_FLAGS', ''), jax_version=jax.__version__,
                cpus=len(os.sched_getaffinity(0)), **torch_compare.cpu_info(), variants={})
  if 'torch' in runners:
    result.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                  torch_cpu_capability=torch.backends.cpu.get_cpu_capability())
  medians = {v: statistics.median(s) for v, s in seconds.items()}
  for v, s in seconds.items():
    result['variants'][v] = dict(
        ms=1e3 * medians[v], ms_min=1e3 * min(s), ms_max=1e3 * max(s),
        gflops=flops / medians[v] / 1e9,
        x_flax=medians[v] / medians['flax'] if 'flax' in medians else None,
        x_torch=medians[v] / medians['torch'] if 'torch' in medians else None)
  return result


def report_markdown(result: Dict[str, object], command: str) -> str:
  r = result
  lines = [f'Command: `{command}`', '',
           f'One block, forward + backward, {r["sequences"]} x {r["tokens"]} tokens, width '
           f'{r["width"]}, {r["heads"]} heads, MLP {r["mlp_dim"]}, {r["dtype"]}; '
           f'{r["flops"] / 1e9:.1f} GFLOP of matmuls. CPU: {r["cpu_model"] or "?"} '
           f'({r["cpus"]} CPUs; {" ".join(r["cpu_isa"]) or "no ISA flags read"}); '
           f'torch capability {r.get("torch_cpu_capability", "-")}; XLA_FLAGS='
           f'{r["xla_flags"] or "unset"}; JAX {r["jax_version"]}; median of {r["reps"]} '
           f'interleaved reps; load average at the end {r.get("load_average", "?")}.', '',
           '| variant | ms (median) | min | max | GFLOP/s | x flax | x torch |',
           '|---|---|---|---|---|---|---|']
  fmt = lambda v: '-' if v is None else f'{v:.3f}'
  for v, e in r['variants'].items():
    lines.append(f'| {v} | {e["ms"]:.1f} | {e["ms_min"]:.1f} | {e["ms_max"]:.1f} | '
                 f'{e["gflops"]:.0f} | {fmt(e["x_flax"])} | {fmt(e["x_torch"])} |')
  return '\n'.join(lines) + '\n'


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer('width', 768, 'Hidden size (ViViT-B: 768).')
  flags.DEFINE_integer('heads', 12, 'Attention heads.')
  flags.DEFINE_integer('mlp_dim', 3072, 'MLP width.')
  flags.DEFINE_integer('tokens', 197, 'Tokens per sequence (224 px / 16 + CLS: 197).')
  flags.DEFINE_integer('sequences', 16, 'Sequences per batch (32 frames / 2 at batch 1).')
  flags.DEFINE_string('dtype', 'float32', 'float32 or bfloat16 (torch: autocast).')
  flags.DEFINE_integer('reps', 8, 'Timed interleaved repetitions (median reported).')
  flags.DEFINE_list('variants', list(VARIANTS), f'Some of {VARIANTS}.')
  flags.DEFINE_string('out', '', 'Also write OUT.json and OUT.md.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  result = compare(FLAGS.variants, FLAGS.width, FLAGS.heads, FLAGS.mlp_dim, FLAGS.tokens,
                   FLAGS.sequences, FLAGS.dtype, FLAGS.reps)
  result['load_average'] = [round(x, 2) for x in os.getloadavg()]
  command = 'python -m vivit_adapter.benchmarks.block_compare ' + ' '.join(sys.argv[1:])
  text = report_markdown(result, command)
  print(text)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out + '.json', 'w') as f:
      json.dump(dict(result, command=command), f, indent=1)
    with open(FLAGS.out + '.md', 'w') as f:
      f.write(text)
    print(f'Wrote {FLAGS.out}.json and {FLAGS.out}.md')


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=cli.absl_flags_parser())
