"""Writes a step benchmark's results: JSON (everything), a markdown table, PNG plots.

Every ratio is taken against the 'baseline' case of the same variant, frame count,
batch and resolution measured in the same run, so a slow or loaded machine scales
both sides alike.
"""

import json
import os
from typing import Dict, List, Optional

GIB = 2 ** 30


def _key(row: Dict, mode: Optional[str] = None):
  return (row['variant'], mode or row['mode'], row['frames'], row['batch'],
          row['resolution'])


def add_ratios(rows: List[Dict]) -> None:
  """Adds 'memory_x_baseline' / 'step_x_baseline' (None without a baseline row)."""
  by_key = {_key(r): r for r in rows}
  for row in rows:
    base = by_key.get(_key(row, 'baseline'))
    row['memory_x_baseline'] = (row['memory']['total'] / base['memory']['total']
                                if base else None)
    row['step_x_baseline'] = None
    if base and _step(row) is not None and _step(base) is not None:
      row['step_x_baseline'] = _step(row) / _step(base)


def _step(row: Dict) -> Optional[float]:
  timing = row.get('timing') or {}
  return timing.get('step_s')


def _own_adapter(mode: str) -> str:
  return 'attention' if mode.startswith('stage2') else 'none'


def case_adapter(row: Dict) -> str:
  """A row's adapter type. Older benchmark files name it only where --model_overrides set
  it; otherwise it is the mode's own (stage 2: attention; the baseline: none)."""
  return (row.get('adapter') or row.get('model_overrides', {}).get('adapter.type')
          or _own_adapter(row['mode']))


def case_dial(row: Dict) -> int:
  """A row's trainable spatial layers (the dial, docs/design.md §2d); 0 in older files."""
  return int(row.get('trainable_spatial_layers') or
             row.get('model_overrides', {}).get('trainable_spatial_layers') or 0)


def mode_label(row: Dict) -> str:
  """The mode, with the adapter type where it is not the mode's own (stage 2: attention)
  and the dial where it is not 0 ('k=1')."""
  adapter, dial = case_adapter(row), case_dial(row)
  extra = [adapter] if adapter != _own_adapter(row['mode']) else []
  extra += [f'k={dial}'] if dial else []
  return f"{row['mode']} ({', '.join(extra)})" if extra else row['mode']


def _gib(nbytes: int) -> str:
  return f'{nbytes / GIB:.3f}'


def _ratio(value: Optional[float]) -> str:
  return '' if value is None else f'{value:.3f}'


def cases_table(rows: List[Dict]) -> str:
  """Markdown table: one line per case, memory in GiB, parameters in millions."""
  lines = ['| variant | mode | frames | temp GiB | args GiB | out GiB | total GiB | '
           'total x baseline | trainable M | frozen M | step s | step x baseline |',
           '|' + '---|' * 12]
  for r in rows:
    m, p = r['memory'], r['params']
    step = _step(r)
    timing = r.get('timing') or {}
    step_text = f'{step:.3f}' if step is not None else timing.get('skipped', '')
    lines.append(
        f"| {r['variant']} | {mode_label(r)} | {r['frames']} | {_gib(m['temp'])} | "
        f"{_gib(m['argument'])} | {_gib(m['output'])} | {_gib(m['total'])} | "
        f"{_ratio(r['memory_x_baseline'])} | {p['trainable'] / 1e6:.2f} | "
        f"{p['frozen'] / 1e6:.2f} | {step_text} | {_ratio(r['step_x_baseline'])} |")
  return '\n'.join(lines)


def search_table(searches: List[Dict]) -> str:
  """Markdown table of the largest fitting frame count per variant and mode."""
  base = {(s['variant'], s['batch'], s['resolution']): s['frames']
          for s in searches if s['mode'] == 'baseline'}
  lines = ['| variant | mode | batch | budget GiB | largest frames | x baseline | '
           'compiles |', '|' + '---|' * 7]
  for s in searches:
    b = base.get((s['variant'], s['batch'], s['resolution']))
    frames = f"{s['frames']}" + (' (search cap)' if s['reached_max'] else '')
    lines.append(
        f"| {s['variant']} | {s['mode']} | {s['batch']} | {s['budget_bytes'] / GIB:g} | "
        f"{frames} | {_ratio(s['frames'] / b) if b else ''} | {len(s['probes'])} |")
  return '\n'.join(lines)


def markdown(result: Dict) -> str:
  meta = result['meta']
  parts = [f"Command: `{meta['command']}`", '',
           f"JAX {meta['jax_version']} on {meta['backend']} ({meta['device']}); "
           f"batch and memory are per device; load average at start "
           f"{meta['load_average']}.", '', cases_table(result['cases'])]
  if result['search']:
    parts += ['', search_table(result['search'])]
  return '\n'.join(parts) + '\n'


def _series(rows: List[Dict], value):
  """{label: ([frames], [values])} with one line per variant and mode."""
  variants = {r['variant'] for r in rows}
  series = {}
  for r in rows:
    y = value(r)
    if y is None:
      continue
    label = mode_label(r) if len(variants) == 1 else f"{r['variant']} {mode_label(r)}"
    xs, ys = series.setdefault(label, ([], []))
    xs.append(r['frames'])
    ys.append(y)
  return series


def _plot(series, ylabel: str, title: str, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, (xs, ys) in series.items():
    order = sorted(range(len(xs)), key=xs.__getitem__)
    ax.plot([xs[i] for i in order], [ys[i] for i in order], marker='o', label=label)
  ax.set_xscale('log', base=2)
  ax.set_yscale('log')
  ax.set_xlabel('frames per clip')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_tables(result: Dict, out: str) -> Dict[str, str]:
  """Writes OUT.json and OUT.md (after every case too, so a long run keeps its rows)."""
  directory = os.path.dirname(out)
  if directory:
    os.makedirs(directory, exist_ok=True)
  add_ratios(result['cases'])
  paths = {'json': out + '.json', 'markdown': out + '.md'}
  with open(paths['json'] + '.tmp', 'w') as f:
    json.dump(result, f, indent=1)
  os.replace(paths['json'] + '.tmp', paths['json'])
  with open(paths['markdown'], 'w') as f:
    f.write(markdown(result))
  return paths


def write(result: Dict, out: str) -> Dict[str, str]:
  """Writes OUT.json, OUT.md, OUT_memory.png (and OUT_step_time.png when timed)."""
  paths = write_tables(result, out)
  meta, rows = result['meta'], result['cases']
  shape = f"{meta['resolution']} px, batch {meta['batch']} per device"
  paths['memory_png'] = out + '_memory.png'
  _plot(_series(rows, lambda r: r['memory']['total'] / GIB), 'compiled step memory, GiB',
        f'Train-step memory (temp + arguments + outputs), {shape}', paths['memory_png'])
  timed = _series(rows, _step)
  if timed:
    paths['step_time_png'] = out + '_step_time.png'
    _plot(timed, 'step time, s (median)', f'Train-step time on {meta["device"]}, {shape}',
          paths['step_time_png'])
  return paths
