"""TensorFlow as this project uses it: for input pipelines only, on the host CPU.

JAX owns the accelerators. TensorFlow grabs every GPU it sees (and their memory) the
first time it initialises its devices, so a program that trains with JAX must hide the
accelerators from TensorFlow before anything builds a tf.data pipeline. Every program
calls `configure()` once, at start, explicitly; importing a module never does it.
"""

from absl import logging


def configure() -> None:
  """Hides GPUs from TensorFlow (input pipelines run on the host); safe to call twice.

  Must run before TensorFlow initialises its devices (before the first tf.data
  pipeline or tensor op). If that already happened and TensorFlow sees GPUs, it warns.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already initialised its devices: too late to hide them
    if tf.config.get_visible_devices('GPU'):
      logging.warning('TensorFlow initialised its devices before '
                      'data_pipelines.tf_runtime.configure() ran and sees GPUs; call it at '
                      'program start so that TensorFlow leaves them to JAX.')
