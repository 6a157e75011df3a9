"""Device memory of a compiled step, read from XLA's `memory_analysis()`.

The figures come from compilation alone, on any backend (CPU included), so the trainer
logs them before its first step and the benchmark reports them for steps it never runs.
"""

from typing import Any, Dict, Tuple


def memory_figures(compiled) -> Dict[str, int]:
  """Bytes per device: temp, argument, output, alias, generated_code and total.

  total = temp + argument + output - alias: donated arguments that XLA aliases to
  outputs (the updated train state) occupy their memory once, not twice.
  """
  m = compiled.memory_analysis()
  figures = {k: int(getattr(m, f'{k}_size_in_bytes', 0) or 0)
             for k in ('temp', 'argument', 'output', 'alias', 'generated_code')}
  figures['total'] = (figures['temp'] + figures['argument'] + figures['output']
                      - figures['alias'])
  return figures


def compile_and_measure(jitted, *args) -> Tuple[Any, Dict[str, int]]:
  """Lowers and compiles `jitted` for `args` (arrays or ShapeDtypeStructs), once:
  (compiled, memory_figures)."""
  compiled = jitted.lower(*args).compile()
  return compiled, memory_figures(compiled)
