"""Loading an experiment file plus `--config.key=value` overrides, the way the CLIs do.

Every CLI that takes `--config=experiments/NAME.py` defines the flag with
`define_config_flag` and parses with `parse_flags` (or `flags_parser` for `app.run`),
and tests and notebooks call `load_config`, so all of them load configs one way:
`ml_collections.config_flags` on a locked config.

On a locked config, config_flags rejects an undeclared key with a bare KeyError or
AttributeError ("'modle'") and a long traceback; `parse_flags` turns that into one line
that names the whole override and the closest declared key.

A `--config.model.variant=L/16x2` override is expanded into the model's sizes once the
flags are parsed, except for sizes that are overridden too: an explicit
`--config.model.hidden_size` wins over the variant, whatever the order of the flags.
(An experiment file's variant was expanded when its get_config() set it.)
"""

import difflib
import os
import re
import traceback
from typing import List, Optional, Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags

from data_pipelines import cli
from vivit_adapter import configs

CONFIG_FLAG = 'config'
_OVERRIDE_RE = re.compile(r'^-{1,2}(?:no)?' + CONFIG_FLAG + r'\.([^=]+)')
_CONFIG_RE = re.compile(r'^-{1,2}' + CONFIG_FLAG + r'(?:=(.*))?$')


class ConfigError(flags.Error):
  """An experiment file that cannot be loaded, or an override of an undeclared key."""


def define_config_flag(flag_values: flags.FlagValues = flags.FLAGS,
                       sys_argv: Optional[List[str]] = None) -> flags.FlagHolder:
  """Defines `--config` (an experiment file) on `flag_values`, locked."""
  return config_flags.DEFINE_config_file(
      CONFIG_FLAG, None, 'Experiment file, e.g. experiments/synthetic_stage1.py; override '
      'its fields with --config.key=value.', flag_values=flag_values, lock_config=True,
      sys_argv=sys_argv)


def override_keys(argv: Sequence[str]) -> List[str]:
  """The dotted keys that `--config.a.b=value` arguments in argv override."""
  return [m.group(1) for m in map(_OVERRIDE_RE.match, argv) if m]


def unknown_key_message(key: str) -> Optional[str]:
  """Why `config.<key>` is not a declared key, or None when it is one."""
  node, where = configs.base_config(), 'config'
  for part in key.split('.'):
    name = re.sub(r'\[.*\]$', '', part)  # config_flags allows `field[0]`
    if not isinstance(node, ml_collections.ConfigDict):
      return f'{where} is a value, not a group of keys, so it has no field {name!r}'
    if name not in node:
      close = difflib.get_close_matches(name, list(node.keys()), n=1)
      hint = f' (did you mean {close[0]!r}?)' if close else ''
      return (f'{where} has no field {name!r}{hint}; every key is declared, with its '
              'default, in vivit_adapter/configs.py')
    node, where = node[name], f'{where}.{name}'
  return None


def _config_path(argv: Sequence[str]) -> str:
  for i, arg in enumerate(argv):
    match = _CONFIG_RE.match(arg)
    if match:
      return match.group(1) if match.group(1) is not None else (
          argv[i + 1] if i + 1 < len(argv) else '')
  return ''


def _check_loaded(flag_values: flags.FlagValues, argv: Sequence[str]) -> None:
  """config_flags defers a file that failed to load; fail now, naming the file."""
  value = flag_values[CONFIG_FLAG].value
  if value is None:
    raise ConfigError('--config=experiments/NAME.py is required.')
  if not isinstance(value, ml_collections.ConfigDict):
    path = _config_path(argv).split(':', 1)[0]
    if not os.path.exists(path):
      raise ConfigError(f'--config={path}: the experiment file does not exist (paths are '
                        f'relative to the current directory, {os.getcwd()}).')
    raise ConfigError(f'--config={path}: get_config() did not return a ConfigDict.')


def _raise_experiment_file_error(error: Exception, argv: Sequence[str]) -> None:
  """An experiment file that fails to load, as one line naming its file and line: a
  SyntaxError, or an error raised while get_config() ran (an undeclared key on the
  locked config). Returns for an error raised elsewhere (a bug: its traceback stays)."""
  path = _config_path(argv).split(':', 1)[0]
  if isinstance(error, SyntaxError) and error.filename and os.path.exists(path) and (
      os.path.samefile(error.filename, path)):
    raise ConfigError(f'--config={path}, line {error.lineno}: SyntaxError: {error.msg}.')
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.exists(path) and os.path.exists(f.filename) and
            os.path.samefile(f.filename, path)]
  if not frames:
    return
  text = str(error.args[0] if error.args else error).split(' Other fields present')[0]
  name = re.search(r'Key "([^"]+)" does not exist', text)
  if name:  # ml_collections' locked-config text lists every field: name the key only
    text = (f'config has no key {name.group(1)!r}; every key is declared, with its '
            'default, in vivit_adapter/configs.py')
  raise ConfigError(f'--config={path}, line {frames[-1].lineno}: {type(error).__name__}: '
                    f'{text.strip(chr(39))}.')


def parse_flags(argv: Sequence[str],
                flag_values: flags.FlagValues = flags.FLAGS) -> List[str]:
  """`flag_values(argv)`, raising ConfigError for an undeclared key or a missing file.

  Returns:
    The arguments that are not flags (argv[0] first), as absl returns them.
  """
  try:
    remaining = flag_values(list(argv))
  except (KeyError, AttributeError) as e:
    for key in override_keys(argv):
      problem = unknown_key_message(key)
      if problem:
        raise ConfigError(f'--config.{key}: unknown config key: {problem}.') from e
    _raise_experiment_file_error(e, argv)
    raise
  except (SyntaxError, ImportError, NameError, TypeError, ValueError) as e:
    _raise_experiment_file_error(e, argv)
    raise
  _check_loaded(flag_values, argv)
  _expand_variant_override(flag_values[CONFIG_FLAG].value, argv)
  return remaining


def _expand_variant_override(config: ml_collections.ConfigDict,
                             argv: Sequence[str]) -> None:
  """Writes the sizes of an overridden model.variant, keeping overridden sizes."""
  keys = [re.sub(r'\[.*\]$', '', key) for key in override_keys(argv)]
  if 'model.variant' not in keys or not config.model.variant:
    return
  from vivit_adapter.models import variants  # pylint: disable=g-import-not-at-top
  explicit = {key[len('model.'):] for key in keys if key.startswith('model.')}
  try:
    variants.apply_variant(config.model, config.model.variant, keep=explicit)
  except ValueError as e:
    raise ConfigError(f'--config.model.variant: {e}') from e


def flags_parser(argv: Sequence[str]) -> List[str]:
  """For `app.run(main, flags_parser=...)`: a bad flag or config key is a one-line error
  and exit code cli.USAGE_ERROR (data_pipelines.cli.absl_flags_parser)."""
  return cli.absl_flags_parser(parse_flags)(argv)


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads experiment file `path` with overrides, exactly as `--config` does on a CLI.

  Args:
    path: the experiment file (optionally `file.py:arg`, passed to get_config).
    overrides: 'key=value' or '--config.key=value' strings, applied in order.

  Returns:
    The locked config.
  """
  args = [o if o.startswith('-') else f'--{CONFIG_FLAG}.{o}' for o in overrides]
  argv = ['load_config', f'--{CONFIG_FLAG}={path}'] + args
  flag_values = flags.FlagValues()
  holder = define_config_flag(flag_values, sys_argv=argv)
  parse_flags(argv, flag_values)
  return holder.value
