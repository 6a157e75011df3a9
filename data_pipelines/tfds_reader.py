"""tfds datasets of videos through the same pipeline as DMVR shards.

A prepared tfds dataset is a set of TFRecord files of serialized examples, so the reader
treats it exactly like DMVR shards (per-host file split, resumable order, the same video
ops); only the parse function differs. The feature layout is
{'video': tfds.features.Video (uint8 frames), 'label': tfds.features.ClassLabel}; frames
stay encoded (PNG or JPEG) until the clip's frames are chosen.

Everything is read offline from `config.dataset.tfds_data_dir`.
"""

import functools

from data_pipelines import tf_runtime
from data_pipelines.source import DatasetInfo
from data_pipelines.source import Source

tfds = tf_runtime.import_tensorflow_datasets()

VIDEO_KEY = 'video'
LABEL_KEY = 'label'


def _split_names(ds_cfg):
  return {'train': ds_cfg.tfds_train_split, 'eval': ds_cfg.tfds_eval_split,
          'test': ds_cfg.tfds_test_split}


@functools.lru_cache(maxsize=8)
def _builder(name: str, data_dir: str):
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # tfds raises several types for "not found"
    raise FileNotFoundError(
        f'tfds dataset {name!r} not found in config.dataset.tfds_data_dir={data_dir!r} '
        f'({e}). Prepare it there first (e.g. `python -m data_pipelines.synthetic`).') from e
  features = builder.info.features
  if VIDEO_KEY not in features or LABEL_KEY not in features:
    raise ValueError(f'tfds dataset {name!r} has features {list(features)}; the reader needs '
                     f'{VIDEO_KEY!r} (tfds.features.Video) and {LABEL_KEY!r} (ClassLabel).')
  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    raise ValueError(f'tfds dataset {name!r} is stored as {builder.info.file_format}; the '
                     'reader reads tfrecord only.')
  return builder


def tfds_builder(ds_cfg):
  return _builder(ds_cfg.tfds_name, ds_cfg.tfds_data_dir)


def tfds_info(ds_cfg) -> DatasetInfo:
  """DatasetInfo from the builder's metadata; non-zero config values take precedence."""
  info = tfds_builder(ds_cfg).info
  names = _split_names(ds_cfg)

  def size(split):
    configured = ds_cfg[f'num_{split}_examples']
    available = names[split] in info.splits
    return configured or (info.splits[names[split]].num_examples if available else 0)

  label = info.features[LABEL_KEY]
  return DatasetInfo(
      num_classes=ds_cfg.num_classes or label.num_classes,
      num_train_examples=size('train'), num_eval_examples=size('eval'),
      num_test_examples=size('test'), label_names=list(label.names))


def tfds_source(ds_cfg, split: str) -> Source:
  """The files and parse function of one split ('train', 'eval' or 'test')."""
  builder = tfds_builder(ds_cfg)
  name = _split_names(ds_cfg)[split]
  if name not in builder.info.splits:
    raise FileNotFoundError(
        f'tfds dataset {ds_cfg.tfds_name!r} in {ds_cfg.tfds_data_dir!r} has no split '
        f'{name!r} (config.dataset.tfds_{split}_split); it has {list(builder.info.splits)}.')
  files = sorted(str(p) for p in builder.info.splits[name].filepaths)
  features = builder.info.features

  def parse(record):
    example = features.deserialize_example(
        record, decoders={VIDEO_KEY: tfds.decode.SkipDecoding()})
    return example[VIDEO_KEY], example[LABEL_KEY]

  return Source(table=f'tfds:{ds_cfg.tfds_name}/{name}', files=files, parse=parse)
