r"""Times one transformer block (forward + backward) in several JAX formulations and in torch.

  python -m vivit_adapter.benchmarks.block_compare [--width=768 --heads=12 --mlp_dim=3072
      --tokens=197 --sequences=16] [--dtype=float32|bfloat16] [--reps=8] [--out=PREFIX]

The end-to-end step of ViViT-B is 12 spatial blocks over (frames/2) sequences of 197
tokens plus little else (`step_profile`), so one block at those shapes is where a
formulation that is faster on a CPU shows, in a second instead of minutes. The JAX
variants compute the same function from the same parameter tree (flax's `query`, `key`,
`value`, `out` names and shapes; `tests/test_block_compare.py` checks outputs and
gradients against the project's `EncoderBlock`):

* `encoder`: the project's block (`layers.EncoderBlock`: flax's MultiHeadDotProductAttention
  with three (D, H, d) projections and `attention.heads_first_attention` as its core:
  q, k and v moved to (B, H, L, d) before the two einsums);
* `flax_core`: the same with flax's own `dot_product_attention` (einsums over
  (B, L, H, d) operands; the project's core until issue 30);
* `fused_qkv`: q, k and v as one (D, 3D) matmul, the kernels concatenated at trace time,
  heads-first core;
* `jax_nn`: `jax.nn.dot_product_attention` (XLA implementation) as the core;
* `torch`: the same block in eager PyTorch (fused qkv `nn.Linear`, SDPA), under
  `torch.autocast` for bfloat16, on the same threads.

Timed steps are interleaved (flax, fused_qkv, ..., torch, flax, ...) so that load from
other processes hits every variant alike; the report gives medians and ratios to
`encoder` and to `torch`. XLA flags apply to the whole process: compare them by running the
command once per `XLA_FLAGS` value and reading each run's ratio to torch (which no XLA
flag touches).
"""

import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, Sequence

from absl import app
from absl import flags
import numpy as np

from data_pipelines import cli
from vivit_adapter.benchmarks import torch_compare

# Loaded on first use, so that --help answers without JAX or torch (data_pipelines.cli).
jax = cli.lazy_module('jax')
torch = cli.lazy_module('torch')
block_variants = cli.lazy_module('vivit_adapter.benchmarks.block_variants')

JAX_VARIANTS = ('encoder', 'flax_core', 'fused_qkv', 'jax_nn')  # block_variants.make_block
VARIANTS = JAX_VARIANTS + ('torch',)


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
      hidden = torch.nn.functional.gelu(self.mlp_in(self.norm2(x)), approximate='tanh')
      return x + self.mlp_out(hidden)

  return Block()


def torch_runner(x, width: int, heads: int, mlp_dim: int, bfloat16: bool) -> Callable:
  block = _torch_block(width, heads, mlp_dim)
  tx = torch.from_numpy(np.asarray(x, np.float32)).requires_grad_(True)

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
  jdtype = block_variants.dtype_of(dtype)
  x = jax.random.normal(jax.random.PRNGKey(0), (sequences, tokens, width))
  params = block_variants.make_block('encoder', mlp_dim, heads, jdtype).init(
      jax.random.PRNGKey(1), x)
  runners = {v: (torch_runner(x, width, heads, mlp_dim, dtype == 'bfloat16') if v == 'torch'
                 else block_variants.jax_runner(v, params, x, mlp_dim, heads, jdtype))
             for v in variants}
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
        x_encoder=medians[v] / medians['encoder'] if 'encoder' in medians else None,
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
           '| variant | ms (median) | min | max | GFLOP/s | x encoder | x torch |',
           '|---|---|---|---|---|---|---|']
  fmt = lambda v: '-' if v is None else f'{v:.3f}'
  for v, e in r['variants'].items():
    lines.append(f'| {v} | {e["ms"]:.1f} | {e["ms_min"]:.1f} | {e["ms_max"]:.1f} | '
                 f'{e["gflops"]:.0f} | {fmt(e["x_encoder"])} | {fmt(e["x_torch"])} |')
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
    torch_compare.write_outputs(FLAGS.out, result, text, command)


if __name__ == '__main__':
  cli.start()
  define_flags()
  app.run(cli.absl_main(main), flags_parser=cli.absl_flags_parser())
