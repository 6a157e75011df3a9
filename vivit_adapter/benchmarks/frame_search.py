"""The largest frame count whose compiled train step fits a memory budget.

Compile-only: each probe lowers and compiles the step at one frame count and reads
`memory_analysis()`, nothing runs. Memory grows with the number of frames, so an
exponential search finds a count that does not fit and a binary search between the
last count that fit and that one finishes the job, on multiples of `step`.
"""

from typing import Callable, Dict, List, Tuple

from vivit_adapter.benchmarks import step_cases


def largest_fitting(fits: Callable[[int], bool], step: int,
                    max_frames: int) -> Tuple[int, List[Tuple[int, bool]]]:
  """The largest multiple of `step` in [step, max_frames] with `fits(frames)` true.

  Args:
    fits: frames -> whether the step at that many frames fits; assumed monotone
      (true up to some count, false beyond).
    step: frame counts probed are multiples of this.
    max_frames: the search stops here (returns it if it still fits).

  Returns:
    (frames, probes): 0 if even `step` frames do not fit; probes lists every
    (frames, fitted) in the order tried.
  """
  if step <= 0 or max_frames < step:
    raise ValueError(f'frame step {step} must be positive and --search_max_frames='
                     f'{max_frames} at least {step}.')
  probes = []

  def probe(units):
    ok = fits(units * step)
    probes.append((units * step, ok))
    return ok

  top = max_frames // step
  good, bad = 0, None
  units = 1
  while bad is None:  # exponential: 1, 2, 4, ... units of `step`
    if probe(units):
      good = units
      if units == top:
        return units * step, probes
      units = min(units * 2, top)
    else:
      bad = units
  while bad - good > 1:  # binary: good fits, bad does not
    mid = (good + bad) // 2
    if probe(mid):
      good = mid
    else:
      bad = mid
  return good * step, probes


def search_case(case: step_cases.Case, budget_bytes: int, max_frames: int,
                cache: Dict = None) -> Dict[str, object]:
  """Largest `case.frames` whose compiled step needs <= `budget_bytes` (total)."""
  cache = {} if cache is None else cache

  def fits(frames):
    probe_case = case.replace(frames=frames)
    if probe_case not in cache:
      cache[probe_case] = step_cases.compile_case(probe_case)
    return cache[probe_case]['memory']['total'] <= budget_bytes

  frames, probes = largest_fitting(fits, step_cases.frame_step(case), max_frames)
  return {'frames': frames, 'budget_bytes': budget_bytes, 'max_frames': max_frames,
          'reached_max': frames == max_frames - max_frames % step_cases.frame_step(case),
          'probes': [{'frames': f, 'fits': ok,
                      'total': cache[case.replace(frames=f)]['memory']['total']}
                     for f, ok in probes]}
