"""Image towers from the ecosystem -> the canonical image ViT layout of `vit_npz`.

Two formats (docs/design.md §2e), read with safetensors' NumPy API (no PyTorch):
* `huggingface`: a model directory, `config.json` + `model.safetensors` (or a sharded
  `model.safetensors.index.json`), of `CLIPVisionModel` / `CLIPModel`,
  `SiglipVisionModel` / `SiglipModel`, `Dinov2Model` or `Dinov2WithRegistersModel`;
* `open_clip`: an OpenCLIP checkpoint in safetensors form, the native
  `VisionTransformer` tower (`visual.conv1`, `visual.transformer.resblocks.i`, ...),
  with or without the `visual.` prefix and the text tower beside it.

Each becomes the flat layout `vit_npz.load_vit_npz` returns (this project's block
names, `cls`, a position embedding whose first row is the cls row exactly when `cls`
exists), plus the towers' own parts under `Transformer/` (pre_norm, registers,
LayerScale_*, MAPHead_0), so `vit_npz.vit_to_vivit_spatial` does the rest: 2D->3D kernel
inflation, position embedding resized to the crop, the merge and its account. A
checkpoint tensor with no place in the video model is kept under its group's name
(`unmapped/<name>`), dropped by the merge and reported as unused.

Torch layouts: a Linear weight is (out, in), a flax Dense kernel (in, out); a Conv2d
weight is (D, C, h, w), a flax Conv kernel (h, w, C, D).
"""

import json
import os
import re
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from data_pipelines import fs
from vivit_adapter.checkpoints import vit_npz
from vivit_adapter.models import names
from vivit_adapter.models import towers as model_towers

HUGGINGFACE, OPEN_CLIP = 'huggingface', 'open_clip'
HF_WEIGHTS = ('model.safetensors', 'model.safetensors.index.json')
HF_CONFIG = 'config.json'
# Hugging Face model_type -> family, for the towers this loader maps.
_HF_FAMILIES = {'clip_vision_model': 'clip', 'clip': 'clip',
                'siglip_vision_model': 'siglip', 'siglip': 'siglip',
                'dinov2': 'dinov2', 'dinov2_with_registers': 'dinov2'}
# Hugging Face hidden_act -> models.towers.ACTIVATIONS.
_HF_ACTIVATIONS = {'quick_gelu': 'quick_gelu', 'gelu': 'gelu',
                   'gelu_pytorch_tanh': 'gelu_tanh', 'gelu_new': 'gelu_tanh'}
_T = 'Transformer'
_TOP_UNUSED = 'unmapped'  # the canonical group of checkpoint names with no mapping


def is_hf_dir(path: str) -> bool:
  return (fs.isdir(path) and fs.exists(os.path.join(path, HF_CONFIG))
          and any(fs.exists(os.path.join(path, w)) for w in HF_WEIGHTS))


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
  """{name: array} of a .safetensors file; bfloat16 tensors as ml_dtypes.bfloat16."""
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  with fs.open(path, 'rb') as f:
    data = f.read()
  header_len = int.from_bytes(data[:8], 'little')
  header = json.loads(data[8:8 + header_len])
  if not any(isinstance(v, dict) and v.get('dtype') == 'BF16' for v in header.values()):
    return dict(st_numpy.load(data))
  # safetensors' NumPy API has no bfloat16 (NumPy has none); many released towers are
  # stored in it, so those files are decoded here from the documented layout: an
  # 8-byte header length, the JSON header, then each tensor's bytes at data_offsets.
  return _decode_with_bfloat16(data[8 + header_len:], header, path)


def _decode_with_bfloat16(body: bytes, header: dict, path: str) -> Dict[str, np.ndarray]:
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  dtypes = {'BF16': ml_dtypes.bfloat16, 'F16': np.float16, 'F32': np.float32,
            'F64': np.float64, 'I64': np.int64, 'I32': np.int32, 'BOOL': np.bool_,
            'U8': np.uint8}
  out = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    if info['dtype'] not in dtypes:
      raise ValueError(f'{path}: tensor {name} has dtype {info["dtype"]}, which this '
                       f'reader does not decode ({sorted(dtypes)}).')
    start, end = info['data_offsets']
    out[name] = np.frombuffer(body[start:end], dtypes[info['dtype']]).reshape(info['shape'])
  return out


def _read_hf_weights(directory: str) -> Dict[str, np.ndarray]:
  single = os.path.join(directory, HF_WEIGHTS[0])
  if fs.exists(single):
    return _read_safetensors(single)
  with fs.open(os.path.join(directory, HF_WEIGHTS[1])) as f:
    shards = sorted(set(json.load(f)['weight_map'].values()))
  out = {}
  for shard in shards:
    out.update(_read_safetensors(os.path.join(directory, shard)))
  return out


def _hf_vision_config(directory: str) -> dict:
  with fs.open(os.path.join(directory, HF_CONFIG)) as f:
    config = json.load(f)
  model_type = config.get('model_type', '')
  if model_type not in _HF_FAMILIES:
    raise ValueError(
        f'{directory}/{HF_CONFIG}: model_type={model_type!r} is not a tower this loader '
        f'maps; expected one of {sorted(_HF_FAMILIES)} (CLIP, SigLIP or DINOv2).')
  if model_type in ('clip', 'siglip'):  # the dual-encoder model: read its image tower
    config = dict(config['vision_config'], model_type=f'{model_type}_vision_model')
  if config.get('use_swiglu_ffn'):
    raise ValueError(f'{directory}/{HF_CONFIG}: use_swiglu_ffn=True (DINOv2 giant): a '
                     'SwiGLU MLP has no counterpart in this model.')
  return config


# ---- tensor conversions --------------------------------------------------------------

def _dense(weight, bias=None) -> dict:
  out = {'kernel': np.asarray(weight).T}
  if bias is not None:
    out['bias'] = np.asarray(bias)
  return out


def _norm(weight, bias) -> dict:
  return {'scale': np.asarray(weight), 'bias': np.asarray(bias)}


def _attention(q, k, v, out, heads: int) -> dict:
  """(weight, bias) pairs of torch q/k/v/out projections -> flax MultiHeadDotProductAttention."""
  width = np.shape(q[0])[1]
  head_dim = width // heads
  tree = {}
  for name, (w, b) in (('query', q), ('key', k), ('value', v)):
    tree[name] = {'kernel': np.asarray(w).T.reshape(width, heads, head_dim),
                  'bias': np.asarray(b).reshape(heads, head_dim)}
  tree['out'] = {'kernel': np.asarray(out[0]).T.reshape(heads, head_dim, width),
                 'bias': np.asarray(out[1])}
  return tree


def _split_packed(weight, bias) -> List[Tuple[np.ndarray, np.ndarray]]:
  """torch.nn.MultiheadAttention's packed in_proj (3D, D) -> [(w, b)] for q, k, v."""
  return list(zip(np.split(np.asarray(weight), 3), np.split(np.asarray(bias), 3)))


def _flat(prefix: str, tree: Mapping) -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat(f'{prefix}/{k}', v))
    else:
      out[f'{prefix}/{k}'] = v
  return out


def _patch_kernel(weight) -> np.ndarray:
  return np.transpose(np.asarray(weight), (2, 3, 1, 0))


def _block(prefix: str, ln1, attention: dict, ln2, fc1, fc2, ls1=None, ls2=None) -> dict:
  """One encoder block in this project's names."""
  tree = {names.ATTENTION_NORM: _norm(*ln1), names.ATTENTION: attention,
          names.MLP_NORM: _norm(*ln2),
          names.MLP: {names.MLP_IN: _dense(*fc1), names.MLP_OUT: _dense(*fc2)}}
  if ls1 is not None:
    tree[names.LAYER_SCALE_ATTENTION] = {names.LAYER_SCALE_PARAM: np.asarray(ls1)}
    tree[names.LAYER_SCALE_MLP] = {names.LAYER_SCALE_PARAM: np.asarray(ls2)}
  return _flat(prefix, tree)


class _Reader:
  """Takes tensors by name and remembers which were taken; the rest are unused.

  Names are the image tower's own; when any checkpoint name starts with `prefix` (the
  tower inside a dual image-text model: `vision_model.`, `visual.`), the tower's names
  are read under it. Unused tensors are reported under their names in the file.
  """

  def __init__(self, tensors: Mapping[str, np.ndarray], source_name: str, prefix: str):
    self.tensors, self.source_name, self.taken = dict(tensors), source_name, set()
    self.prefix = prefix if any(n.startswith(prefix) for n in self.tensors) else ''

  def _key(self, name: str) -> str:
    return self.prefix + name

  def has(self, name: str) -> bool:
    return self._key(name) in self.tensors

  def __call__(self, *names_: str):
    keys = [self._key(n) for n in names_]
    missing = [k for k in keys if k not in self.tensors]
    if missing:
      raise ValueError(f'{self.source_name} lacks {missing}: not a complete checkpoint of '
                       'the tower its config names.')
    self.taken.update(keys)
    return tuple(self.tensors[k] for k in keys) if len(keys) > 1 else self.tensors[keys[0]]

  def pair(self, name: str):
    return self(f'{name}.weight', f'{name}.bias')

  def num_blocks(self, pattern: str) -> int:
    found = {int(m.group(1)) for n in self.tensors
             for m in [re.match(re.escape(self.prefix) + pattern, n)] if m}
    return max(found) + 1 if found else 0

  def unused(self) -> Dict[str, np.ndarray]:
    """The tensors never taken, under `unmapped/<name>` (dropped and reported by the merge)."""
    return {f'{_TOP_UNUSED}/{n}': v for n, v in self.tensors.items() if n not in self.taken}


# ---- Hugging Face --------------------------------------------------------------------

def _hf_clip_siglip(r: _Reader, cfg: dict, family: str, map_head: bool) -> dict:
  heads = cfg['num_attention_heads']
  out = {'embedding/kernel': _patch_kernel(r('embeddings.patch_embedding.weight'))}
  if r.has('embeddings.patch_embedding.bias'):
    out['embedding/bias'] = r('embeddings.patch_embedding.bias')
  out[vit_npz.POSEMB] = r('embeddings.position_embedding.weight')[None]
  if family == 'clip':
    out['cls'] = r('embeddings.class_embedding').reshape(1, 1, -1)
    out.update(_flat(f'{_T}/{names.PRE_NORM}', _norm(*r.pair('pre_layrnorm'))))
  for i in range(r.num_blocks(r'encoder\.layers\.(\d+)\.')):
    p = f'encoder.layers.{i}.'
    attention = _attention(*(r.pair(f'{p}self_attn.{x}_proj') for x in 'qkv'),
                           r.pair(f'{p}self_attn.out_proj'), heads)
    out.update(_block(f'{_T}/{names.encoder_block(i)}', r.pair(f'{p}layer_norm1'), attention,
                      r.pair(f'{p}layer_norm2'), r.pair(f'{p}mlp.fc1'), r.pair(f'{p}mlp.fc2')))
  out.update(_flat(f'{_T}/{names.ENCODER_NORM}', _norm(*r.pair('post_layernorm'))))
  if family == 'siglip' and r.has('head.probe') and map_head:
    out.update(_map_head(r, 'head.', heads))
  return out


def _map_head(r: _Reader, p: str, heads: int) -> dict:
  q, k, v = _split_packed(*r(f'{p}attention.in_proj_weight', f'{p}attention.in_proj_bias'))
  tree = {names.MAP_PROBE: r(f'{p}probe'),
          names.ATTENTION: _attention(q, k, v, r.pair(f'{p}attention.out_proj'), heads),
          names.ATTENTION_NORM: _norm(*r.pair(f'{p}layernorm')),
          names.MLP: {names.MLP_IN: _dense(*r.pair(f'{p}mlp.fc1')),
                      names.MLP_OUT: _dense(*r.pair(f'{p}mlp.fc2'))}}
  return _flat(f'{_T}/{names.MAP_HEAD}', tree)


def _hf_dinov2(r: _Reader, cfg: dict) -> dict:
  heads = cfg['num_attention_heads']
  e = 'embeddings.'
  out = {'embedding/kernel': _patch_kernel(r(f'{e}patch_embeddings.projection.weight')),
         'embedding/bias': r(f'{e}patch_embeddings.projection.bias'),
         'cls': r(f'{e}cls_token'), vit_npz.POSEMB: r(f'{e}position_embeddings')}
  if r.has(f'{e}register_tokens'):
    out[f'{_T}/{names.REGISTERS}'] = r(f'{e}register_tokens')
  for i in range(r.num_blocks(r'encoder\.layer\.(\d+)\.')):
    p = f'encoder.layer.{i}.'
    a = f'{p}attention.attention.'
    attention = _attention(*(r.pair(f'{a}{x}') for x in ('query', 'key', 'value')),
                           r.pair(f'{p}attention.output.dense'), heads)
    out.update(_block(f'{_T}/{names.encoder_block(i)}', r.pair(f'{p}norm1'), attention,
                      r.pair(f'{p}norm2'), r.pair(f'{p}mlp.fc1'), r.pair(f'{p}mlp.fc2'),
                      r(f'{p}layer_scale1.lambda1'), r(f'{p}layer_scale2.lambda1')))
  out.update(_flat(f'{_T}/{names.ENCODER_NORM}', _norm(*r.pair('layernorm'))))
  return out


def load_hf_tower(directory: str, map_head: bool = True) -> Tuple[dict, dict]:
  """A Hugging Face model directory -> (canonical flat image ViT, its vision config).

  map_head=False leaves a SigLIP MAP head unmapped (reported unused): for a model that
  pools each frame otherwise.
  """
  cfg = _hf_vision_config(directory)
  family = _HF_FAMILIES[cfg['model_type']]
  r = _Reader(_read_hf_weights(directory), f'{directory}/model.safetensors', 'vision_model.')
  out = (_hf_dinov2(r, cfg) if family == 'dinov2'
         else _hf_clip_siglip(r, cfg, family, map_head))
  out.update(r.unused())
  return out, cfg


def hf_switches(cfg: dict, source_name: str = 'config.json') -> Dict[str, object]:
  """What a Hugging Face vision config says the model's switches must be
  ({config.model key: value}); a switch the config does not fix is absent."""
  family = _HF_FAMILIES[cfg['model_type']]
  st = 'spatial_transformer.'
  out = {f'{st}layer_norm_epsilon': float(cfg.get('layer_norm_eps', 1e-6)),
         f'{st}pre_norm': family == 'clip', f'{st}layer_scale': family == 'dinov2',
         'patches.bias': family != 'clip',
         f'{st}num_registers': int(cfg.get('num_register_tokens', 0))}
  act = cfg.get('hidden_act')
  if act not in _HF_ACTIVATIONS:
    raise ValueError(f'{source_name}: hidden_act={act!r} has no counterpart here; the MLP '
                     f'activations mapped are {sorted(_HF_ACTIVATIONS)}.')
  out[f'{st}mlp_activation'] = _HF_ACTIVATIONS[act]
  return out


# ---- OpenCLIP ------------------------------------------------------------------------

def load_open_clip(path: str, num_heads: int) -> dict:
  """An OpenCLIP safetensors checkpoint -> canonical flat image ViT.

  OpenCLIP stores no config beside its weights, so the head count comes from the
  model (config.model.spatial_transformer.num_heads).
  """
  tensors = _read_safetensors(path)
  if any(n.startswith(('visual.trunk.', 'trunk.')) for n in tensors):
    raise ValueError(f'{path} is an OpenCLIP model with a timm image tower (visual.trunk.*), '
                     'which this loader does not map; use the Hugging Face export of the '
                     'same weights (checkpoint_format=huggingface) where there is one.')
  r = _Reader(tensors, path, 'visual.')
  if not r.has('conv1.weight'):
    raise ValueError(f'{path} is not an OpenCLIP vision transformer checkpoint: no '
                     f'visual.conv1.weight among its {len(tensors)} tensors.')
  out = {'embedding/kernel': _patch_kernel(r('conv1.weight')),
         'cls': r('class_embedding').reshape(1, 1, -1),
         vit_npz.POSEMB: r('positional_embedding')[None]}
  if r.has('conv1.bias'):
    out['embedding/bias'] = r('conv1.bias')
  if r.has('ln_pre.weight'):
    out.update(_flat(f'{_T}/{names.PRE_NORM}', _norm(*r.pair('ln_pre'))))
  for i in range(r.num_blocks(r'transformer\.resblocks\.(\d+)\.')):
    p = f'transformer.resblocks.{i}.'
    q, k, v = _split_packed(*r(f'{p}attn.in_proj_weight', f'{p}attn.in_proj_bias'))
    attention = _attention(q, k, v, r.pair(f'{p}attn.out_proj'), num_heads)
    scales = ((r(f'{p}ls_1.gamma'), r(f'{p}ls_2.gamma')) if r.has(f'{p}ls_1.gamma')
              else (None, None))
    out.update(_block(f'{_T}/{names.encoder_block(i)}', r.pair(f'{p}ln_1'), attention,
                      r.pair(f'{p}ln_2'), r.pair(f'{p}mlp.c_fc'), r.pair(f'{p}mlp.c_proj'),
                      *scales))
  out.update(_flat(f'{_T}/{names.ENCODER_NORM}', _norm(*r.pair('ln_post'))))
  out.update(r.unused())
  return out


def open_clip_switches(flat: Mapping) -> Dict[str, object]:
  """The switches an OpenCLIP checkpoint fixes by what it holds (not its activation:
  quick-GELU for OpenAI's weights, exact GELU for OpenCLIP's own trainings)."""
  st = 'spatial_transformer.'
  return {'patches.bias': 'embedding/bias' in flat,
          f'{st}pre_norm': f'{_T}/{names.PRE_NORM}/scale' in flat,
          f'{st}layer_scale': any(names.LAYER_SCALE_ATTENTION in k for k in flat)}


# ---- checks and the account ----------------------------------------------------------

def check_switches(expected: Mapping[str, object], model_config, source_name: str) -> None:
  """Raises one error listing every switch of config.model that the checkpoint disagrees
  with: a wrong activation or epsilon loads without a shape error and computes another
  model, so it is caught here instead."""
  wrong = []
  for key, want in expected.items():
    node = model_config
    for part in key.split('.'):
      node = node[part]
    if node != want:
      wrong.append(f'config.model.{key}={node!r} (the checkpoint needs {want!r})')
  if wrong:
    raise ValueError(f'{source_name} is a tower of other switches than the model: '
                     + '; '.join(wrong) + '. Set them, or use its tower variant '
                     '(models/variants.py TOWERS, e.g. "CLIP-B/16x2").')


def _check_unused_map_head(flat: Mapping, model_config, source_name: str) -> None:
  """A checkpoint pooled by its MAP head (SigLIP) has no class token: a model that pools
  by the mean may leave the head unused (the user's choice), one that would read a
  class token is refused here with the fix, before the merge's generic error."""
  if not any(k.startswith(f'{_TOP_UNUSED}/') and k.endswith('head.probe') for k in flat):
    return
  pooling = model_config.spatial_transformer.pooling
  if model_towers.spatial_has_cls(model_towers.TowerOptions(pooling=pooling),
                                  model_config.classifier):
    raise ValueError(
        f'{source_name} pools each image with its MAP head and has no class token, but '
        f'config.model.spatial_transformer.pooling={pooling!r}: set it to \'map\' (the '
        "tower's own pooling; the SigLIP-* variants do) or 'mean'.")


def unused_note(flat: Mapping) -> List[str]:
  """The run log's line naming the checkpoint tensors with no place in the video model."""
  unused = sorted(k.split('/', 1)[1] for k in flat if k.startswith(f'{_TOP_UNUSED}/'))
  if not unused:
    return []
  listed = ', '.join(unused[:8]) + (f', ... ({len(unused) - 8} more)' if len(unused) > 8
                                    else '')
  return [f'{len(unused)} checkpoint tensors not used: {listed}']


IGNORED = vit_npz.DROPPED + (_TOP_UNUSED,)


def load_tower(fmt: str, path: str, model_config) -> Tuple[dict, List[str]]:
  """(canonical flat image ViT, notes) for `fmt` in (HUGGINGFACE, OPEN_CLIP), after
  checking the model's switches against what the checkpoint says."""
  if fmt == HUGGINGFACE:
    flat, cfg = load_hf_tower(path, map_head=model_config.spatial_transformer.pooling == 'map')
    check_switches(hf_switches(cfg, f'{path}/{HF_CONFIG}'), model_config, path)
    _check_unused_map_head(flat, model_config, path)
    where = f'{cfg["model_type"]} ({cfg.get("hidden_act")}, eps {cfg.get("layer_norm_eps")})'
  elif fmt == OPEN_CLIP:
    flat = load_open_clip(path, model_config.spatial_transformer.num_heads)
    check_switches(open_clip_switches(flat), model_config, path)
    # The file records neither heads nor activation: say what was assumed.
    where = (f'OpenCLIP VisionTransformer ({model_config.spatial_transformer.num_heads} '
             f'heads, {model_config.spatial_transformer.mlp_activation}, as config.model '
             'says: the file does not record them)')
  else:
    raise ValueError(f'load_tower: format {fmt!r}; expected {HUGGINGFACE!r} or {OPEN_CLIP!r}.')
  return flat, [f'tower: {where}'] + unused_note(flat)


def detect(path: str) -> Optional[str]:
  """HUGGINGFACE for a model directory, OPEN_CLIP for a .safetensors file, else None."""
  if is_hf_dir(path):
    return HUGGINGFACE
  if not fs.isdir(path) and path.endswith('.safetensors'):
    return OPEN_CLIP
  return None

