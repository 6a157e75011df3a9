"""Converts video files listed in a CSV into DMVR-format TFRecord shards.

  python -m data_pipelines.convert_videos --csv=train.csv --output=DIR/train.tfrecord@8 \
      [--label_map=FILE] [--fps=F] [--min_resize=S] [--num_workers=K] [--jpeg_quality=Q]

Each CSV row is `path,label`; a first row that names columns (`path,label`,
`video_path,class_name`, ... and no such file) is a header and skipped; the same video on
two rows is reported (an error when their labels differ). Relative paths are resolved
against the CSV's folder. An output folder that already holds this split is refused
(another conversion's shards would be read with the new ones); --overwrite replaces the
folder's dataset whole. A label is an integer, or a class name looked up
in the label map: --label_map, else DIR/label_map.txt from an earlier split, else a new
sorted map of the names in the CSV. Videos are decoded with PyAV in parallel processes;
a video that cannot be read is reported (CSV row, reason) and skipped. The output folder
also gets `metadata.json` (splits merged across calls), `label_map.txt` and
`<split>.report.json`. The last line says how many videos were skipped; more than
--max_skipped_fraction of them (default 0.05) exits 1 (cli.DATA_ERROR), the shards being
written all the same; a bad CSV or label map exits 2, a full disk 74 (no half-written
shard is left).
"""

import argparse
import concurrent.futures
import contextlib
import csv
import dataclasses
import glob
import io
import json
import multiprocessing
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tqdm

from data_pipelines import cli
from data_pipelines import dmvr_format
from data_pipelines import fs

# The dataset folder's files (metadata.json, label_map.txt) are dmvr_format's.
METADATA_FILE, LABEL_MAP_FILE = dmvr_format.METADATA_FILE, dmvr_format.LABEL_MAP_FILE
read_label_map = dmvr_format.read_label_map
write_metadata = dmvr_format.write_metadata
merge_split_metadata = dmvr_format.merge_split_metadata


# ----------------------------------------------------------------------- CSV and labels
@dataclasses.dataclass(frozen=True)
class VideoRow:
  row: int  # 1-based line number in the CSV, for error messages
  path: str  # resolved path
  label: int
  label_text: str
  video_id: str  # the path as the CSV wrote it


def read_csv_rows(csv_path: str) -> List[Tuple[int, str, str]]:
  """(row number, path as written, raw label) per data row."""
  if not fs.exists(csv_path):
    raise FileNotFoundError(f'CSV file {csv_path!r} does not exist.')
  rows = []
  with fs.open(csv_path) as f:
    text = io.StringIO(f.read(), newline='')  # csv wants the newlines untranslated
    for number, fields in enumerate(csv.reader(text), start=1):
      if not fields or not ''.join(fields).strip():
        continue
      if len(fields) != 2:
        raise ValueError(f'CSV file {csv_path!r}, row {number}: expected 2 columns '
                         f'"path,label", got {len(fields)}: {fields!r}.')
      path, label = fields[0].strip(), fields[1].strip()
      if not rows and _is_header(path, label, csv_path):
        continue
      rows.append((number, path, label))
  if not rows:
    raise ValueError(f'CSV file {csv_path!r} has no rows; expected lines "path,label".')
  return rows


# Column names a header row uses (compared lower-cased, '-' and ' ' read as '_').
HEADER_PATH_NAMES = frozenset({'path', 'video', 'video_path', 'videopath', 'file', 'filename',
                               'file_name', 'filepath', 'file_path', 'clip', 'clip_path',
                               'video_id', 'youtube_id', 'url'})
HEADER_LABEL_NAMES = frozenset({'label', 'labels', 'class', 'class_name', 'classname',
                                'class_id', 'class_label', 'label_name', 'label_id',
                                'category', 'action', 'target'})


def _is_header(path: str, label: str, csv_path: str) -> bool:
  """The first row names columns (`video_path,class_name`), not a video: by the column
  names, when no such file exists (a class named 'action' with a real video stays)."""
  norm = lambda text: text.strip().lower().replace('-', '_').replace(' ', '_')
  if norm(path) not in HEADER_PATH_NAMES and norm(label) not in HEADER_LABEL_NAMES:
    return False
  return not fs.exists(os.path.join(os.path.dirname(fs.abspath(csv_path)), path))


def check_duplicates(rows, csv_path: str) -> List[Dict]:
  """The same video on two rows: with two labels an error (which one is right?), with the
  same label reported (a warning, and in the report) and converted once per row."""
  first, duplicates = {}, []
  for number, path, label in rows:
    if path in first:
      row, other = first[path]
      if other != label:
        raise ValueError(
            f'CSV file {csv_path!r}: rows {row} and {number} name the same video {path!r} '
            f'with different labels ({other!r}, {label!r}); keep one of them.')
      duplicates.append({'rows': [row, number], 'path': path})
    else:
      first[path] = (number, label)
  for d in duplicates:
    print(f'Warning: CSV file {csv_path!r}, rows {d["rows"][0]} and {d["rows"][1]} name '
          f'the same video {d["path"]!r}; it is converted twice.', file=sys.stderr)
  return duplicates


def _as_int(text: str) -> Optional[int]:
  try:
    return int(text)
  except ValueError:
    return None


def resolve_labels(rows, csv_path: str, label_names: Optional[List[str]],
                   label_map_path: str = '') -> Tuple[List[VideoRow], List[str]]:
  """Turns raw labels into indices; builds a sorted label map when none is given."""
  if label_names is None:
    names = sorted({lab for _, _, lab in rows if _as_int(lab) is None})
    ints = [(n, lab) for n, _, lab in rows if _as_int(lab) is not None]
    if names and ints:
      raise ValueError(
          f'CSV file {csv_path!r} mixes integer labels (row {ints[0][0]}: {ints[0][1]!r}) '
          f'and class names without a label map; pass --label_map=FILE.')
    label_names = names or [str(i) for i in range(max(int(l) for _, l in ints) + 1)]
    label_map_path = 'the label map built from the CSV'
  index = {name: i for i, name in enumerate(label_names)}
  root = os.path.dirname(fs.abspath(csv_path))
  out = []
  for number, path, lab in rows:
    i = _as_int(lab)
    if i is None and lab not in index:
      raise ValueError(
          f'CSV file {csv_path!r}, row {number}: label {lab!r} is not in {label_map_path!r} '
          f'({len(label_names)} classes: {label_names[:5]}...). Add the class to the '
          'label map or fix the row.')
    i = index[lab] if i is None else i
    if not 0 <= i < len(label_names):
      raise ValueError(
          f'CSV file {csv_path!r}, row {number}: label {i} is outside [0, '
          f'{len(label_names)}) of {label_map_path!r}.')
    out.append(VideoRow(number, os.path.join(root, path), i, label_names[i], path))
  return out, label_names


# ------------------------------------------------------------------------- decoding
@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  fps: float = 0.  # 0 keeps the source frame rate
  min_resize: int = 0  # 0 keeps the source size
  jpeg_quality: int = 90


def _target_size(width: int, height: int, min_resize: int) -> Tuple[int, int]:
  if not min_resize:
    return width, height
  scale = min_resize / min(width, height)
  return max(1, round(width * scale)), max(1, round(height * scale))


def _frame_times(frames, stream):
  """Seconds of each frame; falls back to index / rate when a frame has no pts."""
  rate = float(stream.average_rate or stream.guessed_rate or 25)
  for i, frame in enumerate(frames):
    yield frame, (float(frame.time) if frame.time is not None else i / rate)


def _resample(timed_frames, fps: float):
  """Yields, for targets k / fps, the latest frame at or before each target."""
  eps, prev, start, k = 1e-6, None, None, 0
  for frame, t in timed_frames:
    if not fps:
      yield frame
      continue
    start = t if start is None else start
    while prev is not None and start + k / fps < t - eps:
      yield prev
      k += 1
    prev = frame
  if fps and prev is not None:
    while start + k / fps <= t + eps:
      yield prev
      k += 1


def decode_video(path: str, fps: float = 0., min_resize: int = 0) -> np.ndarray:
  """Decodes a video file into (T, H, W, 3) uint8 RGB frames with PyAV."""
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('Decoding videos needs PyAV: pip install -e ".[video]" '
                      '(or pip install av).') from e
  if not fs.exists(path):
    raise FileNotFoundError('file does not exist')
  out, cache = [], (None, None)
  # PyAV opens local files itself; a URL (gs://) is read through a file object.
  source = fs.open(path, 'rb') if fs.is_url(path) else contextlib.nullcontext(path)
  with source as file, av.open(file) as container:
    if not container.streams.video:
      raise ValueError('no video stream')
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    timed = _frame_times(container.decode(stream), stream)
    for frame in _resample(timed, fps):
      if cache[0] is not frame:  # a frame repeated by up-sampling is converted once
        width, height = _target_size(frame.width, frame.height, min_resize)
        cache = (frame, frame.to_ndarray(format='rgb24', width=width, height=height,
                                         interpolation='AREA'))
      out.append(cache[1])
  if not out:
    raise ValueError('no frames decoded')
  return np.stack(out)


def convert_row(task: Tuple[VideoRow, DecodeOptions]) -> Tuple[Optional[bytes], str]:
  """One video -> (serialized SequenceExample, '') or (None, reason it was skipped)."""
  row, opts = task
  try:
    frames = decode_video(row.path, opts.fps, opts.min_resize)
    jpegs = dmvr_format.encode_jpeg_frames(frames, quality=opts.jpeg_quality)
  except Exception as e:  # pylint: disable=broad-except
    # Any failure (missing file, corrupt stream, odd codec) skips only this video.
    return None, f'{type(e).__name__}: {e}'
  example = dmvr_format.make_sequence_example(jpegs, row.label, row.label_text,
                                              row.video_id)
  # deterministic: else the context map's order can change from process to process.
  return example.SerializeToString(deterministic=True), ''


# ------------------------------------------------------------------------ conversion
def _split_name(output: str) -> Tuple[str, str, int]:
  """'DIR/train.tfrecord@8' -> ('DIR/train.tfrecord', 'train', 8)."""
  prefix, sep, count = output.rpartition('@')
  if not sep or not count.isdigit() or int(count) < 1:
    raise ValueError(f'--output={output!r} must name a sharded table PREFIX@N with N >= 1, '
                     'e.g. DIR/train.tfrecord@8.')
  return prefix, os.path.basename(prefix).split('.')[0], int(count)


def report_path(output: str) -> str:
  """DIR/<split>.report.json for --output=DIR/<split>.tfrecord@N."""
  prefix, split, _ = _split_name(output)
  return os.path.join(os.path.dirname(fs.abspath(prefix)), f'{split}.report.json')


def _choose_label_map(label_map: str, output_dir: str) -> Tuple[Optional[List[str]], str]:
  """--label_map, else the output folder's label map from an earlier split, else none."""
  existing = os.path.join(output_dir, LABEL_MAP_FILE) if output_dir else ''
  if not label_map:
    if existing and fs.exists(existing):
      return read_label_map(existing), existing
    return None, ''
  names = read_label_map(label_map)
  if existing and fs.exists(existing) and read_label_map(existing) != names:
    raise ValueError(
        f'--label_map={label_map!r} differs from {existing!r}, written by an earlier split. '
        'Convert every split of a dataset with the same label map, or use a new folder.')
  return names, label_map


_DATASET_FILES = ('*.tfrecord-?????-of-?????', METADATA_FILE, LABEL_MAP_FILE,
                  '*.report.json')


def clear_output(output_dir: str) -> None:
  """--overwrite: the folder's dataset files go, whole (shards of every split,
  metadata.json, label_map.txt, reports; nothing else)."""
  for pattern in _DATASET_FILES:
    for path in fs.glob(os.path.join(glob.escape(output_dir), pattern)):
      fs.remove(path)


def check_output(output_dir: str, prefix: str, split: str) -> None:
  """Refuses a folder that already holds this split: another conversion's shards beside
  the new ones would be read as one table, and its label map kept."""
  shards = fs.glob(f'{glob.escape(prefix)}-?????-of-?????')
  meta_path = os.path.join(output_dir, METADATA_FILE)
  listed = {}
  if fs.exists(meta_path):
    with fs.open(meta_path) as f:
      listed = json.load(f).get('splits', {})
  if shards or split in listed:
    held = (f'{len(shards)} shard(s) such as {os.path.basename(shards[0])}' if shards
            else f'{meta_path} lists {listed[split]} videos')
    raise ValueError(
        f'{output_dir} already holds a {split!r} split ({held}): converting into it would '
        'mix two conversions (and keep the old label map). Convert into a new folder, or '
        'pass --overwrite to replace the dataset in that folder whole (the shards of every '
        'split, metadata.json, label_map.txt and the reports).')


def _ignore_sigint() -> None:
  # Ctrl-C reaches every worker too: the parent alone reports it, in one line.
  import signal  # pylint: disable=g-import-not-at-top
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(tasks, num_workers: int, desc: str, progress: bool):
  """convert_row over the tasks, in order, in `num_workers` processes (<= 1: in-process)."""
  bar = dict(total=len(tasks), desc=desc, unit='video', disable=not progress)
  if num_workers <= 1:
    yield from tqdm.tqdm(map(convert_row, tasks), **bar)
    return
  # 'spawn': forking a parent that has loaded TensorFlow can deadlock the children.
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context,
                                              initializer=_ignore_sigint) as pool:
    yield from tqdm.tqdm(pool.map(convert_row, tasks, chunksize=1), **bar)


def convert(csv_path: str, output: str, *, label_map: str = '', fps: float = 0.,
            min_resize: int = 0, num_workers: int = 1, jpeg_quality: int = 90,
            shuffle_seed: int = 0, progress: bool = True, overwrite: bool = False) -> Dict:
  """Converts the CSV's videos into `output` (PREFIX@N) shards; returns the report dict.

  Rows are written in an order shuffled with `shuffle_seed` (-1 keeps the CSV order),
  so class-sorted CSVs do not give class-sorted shards. A folder that holds this split
  already is refused unless `overwrite` (`check_output`, `clear_output`).
  """
  prefix, split, num_shards = _split_name(output)
  output_dir = os.path.dirname(fs.abspath(prefix))
  raw_rows = read_csv_rows(csv_path)
  duplicates = check_duplicates(raw_rows, csv_path)
  if not overwrite:
    check_output(output_dir, prefix, split)
  # The folder's label map is not reused when it is about to be replaced.
  names, map_path = _choose_label_map(label_map, '' if overwrite else output_dir)
  rows, names = resolve_labels(raw_rows, csv_path, names, map_path)
  if overwrite:
    clear_output(output_dir)  # after every check of the input
  if shuffle_seed >= 0:
    rows = [rows[i] for i in np.random.default_rng(shuffle_seed).permutation(len(rows))]
  opts = DecodeOptions(fps, min_resize, jpeg_quality)
  skipped = []
  with dmvr_format.ShardedWriter(prefix, num_shards) as writer:
    results = _run([(row, opts) for row in rows], num_workers, split, progress)
    for (record, reason), row in zip(results, rows):  # results first: it ends the bar
      if record is None:
        tqdm.tqdm.write(f'Skipped {row.path!r} (CSV row {row.row}): {reason}', sys.stderr)
        skipped.append({'row': row.row, 'path': row.path, 'reason': reason})
      else:
        writer.write(record)
  report = {'csv': fs.abspath(csv_path), 'output': output, 'split': split,
            'written': writer.num_written, 'skipped': len(skipped),
            'skipped_files': sorted(skipped, key=lambda s: s['row']),
            'num_classes': len(names), 'duplicates': duplicates}
  fs.atomic_write(report_path(output),
                json.dumps(report, indent=2) + '\n')
  merge_split_metadata(output_dir, split, writer.num_written, names,
                       table=f'{os.path.basename(prefix)}@{num_shards}',
                       source='data_pipelines.convert_videos')
  print(f'{split}: wrote {writer.num_written} videos to {output}; skipped {len(skipped)} of '
        f'{len(rows)} (each listed above; report: {report_path(output)}).', flush=True)
  return report


def check_skipped(report: Dict, max_skipped_fraction: float) -> None:
  """Raises cli.DataError when more than `max_skipped_fraction` of the videos (or all of
  them) could not be converted."""
  total = report['written'] + report['skipped']
  fraction = report['skipped'] / max(total, 1)
  if report['written'] and fraction <= max_skipped_fraction:
    return
  raise cli.DataError(
      f'{report["skipped"]} of {total} videos were skipped ({fraction:.1%} > '
      f'--max_skipped_fraction={max_skipped_fraction}); the reasons are listed above and in '
      f'{report_path(report["output"])}. Fix or remove those CSV rows and convert again, or raise '
      '--max_skipped_fraction.')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The CLI; returns the exit code (data_pipelines.cli): 1 when too many videos were
  skipped (or none written), 2 for a bad CSV, label map or flag."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--csv', required=True, help='rows "path,label"')
  parser.add_argument('--output', required=True, help='DIR/<split>.tfrecord@N')
  parser.add_argument('--label_map', default='', help='one class name per line')
  parser.add_argument('--fps', type=float, default=0., help='resample to this rate; 0 keeps')
  parser.add_argument('--min_resize', type=int, default=0, help='short side; 0 keeps')
  parser.add_argument('--num_workers', type=int, default=os.cpu_count() or 1)
  parser.add_argument('--jpeg_quality', type=int, default=90)
  parser.add_argument('--shuffle_seed', type=int, default=0, help='-1 keeps CSV order')
  parser.add_argument('--no_progress', action='store_true')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace the dataset already in the output folder, whole: the '
                      'shards of every split, metadata.json, label_map.txt, the reports')
  parser.add_argument('--max_skipped_fraction', type=float, default=0.05,
                      help='exit 1 when more than this fraction of the videos cannot be '
                      'converted (the shards are written all the same)')
  cli.add_verbosity_flag(parser)
  args = parser.parse_args(argv)
  cli.set_verbosity(args.verbosity)
  return cli.run(_convert, args, program='data_pipelines.convert_videos')


def _convert(args: argparse.Namespace) -> None:
  try:
    with cli.usage_errors():  # a ValueError here is the CSV's or the label map's
      report = convert(args.csv, args.output, label_map=args.label_map, fps=args.fps,
                       min_resize=args.min_resize, num_workers=args.num_workers,
                       jpeg_quality=args.jpeg_quality, shuffle_seed=args.shuffle_seed,
                       progress=not args.no_progress, overwrite=args.overwrite)
  except (KeyboardInterrupt, cli.Preempted) as e:
    # A conversion does not resume: say so, rather than the programs' "continue".
    name = 'SIGINT' if isinstance(e, KeyboardInterrupt) else cli.stop_signal_name(e)
    raise cli.Preempted(
        f'stopped by {name}; no shard was left half-written and nothing was recorded in '
        'metadata.json; rerun the same command to convert this split again from the '
        'start.') from None
  check_skipped(report, args.max_skipped_fraction)


if __name__ == '__main__':
  cli.start()
  sys.exit(main())
