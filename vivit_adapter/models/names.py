"""The parameter-tree names of the ViViT factorised encoder, spelled once.

They are scenic's names (see tests/data/scenic_vivit_fe_params.txt), which is why a
scenic checkpoint loads into this project's model unchanged. The model creates its
modules under these names; checkpoint surgery, the optimizer's frozen/trainable split
and the PyTorch reference read them from here, so a rename cannot leave one of them
silently looking for the old name. No jax or flax import: anything may import this.

    embedding                  tubelet embedding
    cls_SpatialTransformer     CLS token of the spatial encoder ('token' classifier)
    SpatialTransformer         spatial encoder
    Adapter                    adapter (stage 2)
    cls_TemporalTransformer    CLS token of the temporal encoder ('token' classifier)
    TemporalTransformer        temporal encoder
    output_projection          head
"""

# ---- top level, in the order of the paper's figure ---------------------------------
EMBEDDING = 'embedding'
SPATIAL = 'SpatialTransformer'
ADAPTER = 'Adapter'
TEMPORAL = 'TemporalTransformer'
HEAD = 'output_projection'


def cls_token(encoder: str) -> str:
  """The name of the CLS-token parameter that `encoder` prepends ('token' classifier)."""
  return f'cls_{encoder}'


SPATIAL_CLS = cls_token(SPATIAL)
TEMPORAL_CLS = cls_token(TEMPORAL)

# ---- inside an encoder (layers.Encoder, scenic's `Encoder`) ------------------------
POSEMB_MODULE = 'posembed_input'
POSEMB_PARAM = 'pos_embedding'
POSEMB = f'{POSEMB_MODULE}/{POSEMB_PARAM}'
ENCODER_NORM = 'encoder_norm'
BLOCK_PREFIX = 'encoderblock_'


def encoder_block(i: int) -> str:
  """The name of an encoder's i-th transformer block."""
  return f'{BLOCK_PREFIX}{i}'


# ---- inside a block (layers.EncoderBlock) and its MLP (layers.MlpBlock) ------------
ATTENTION_NORM = 'LayerNorm_0'
ATTENTION = 'MultiHeadDotProductAttention_0'
MLP_NORM = 'LayerNorm_1'
MLP = 'MlpBlock_0'
MLP_IN, MLP_OUT = 'Dense_0', 'Dense_1'

# ---- image-tower parts (models/towers.py), present only when their option is on -----
PRE_NORM = 'pre_norm'  # in an encoder: LayerNorm before the blocks (CLIP)
REGISTERS = 'registers'  # in an encoder: (1, R, D) register tokens (DINOv2)
LAYER_SCALE_ATTENTION, LAYER_SCALE_MLP = 'LayerScale_0', 'LayerScale_1'  # in a block
LAYER_SCALE_PARAM = 'scale'
MAP_HEAD = 'MAPHead_0'  # in an encoder: attention pooling of a frame (SigLIP)
MAP_PROBE = 'probe'  # in MAP_HEAD, beside ATTENTION, ATTENTION_NORM and MLP

# ---- full paths ---------------------------------------------------------------------
SPATIAL_POSEMB = f'{SPATIAL}/{POSEMB}'
TEMPORAL_POSEMB = f'{TEMPORAL}/{POSEMB}'

# ---- groups (top-level names; `checkpoints.merge.matches` patterns) ----------------
# What `config.model.freeze_spatial` freezes: embedding and spatial encoder with its CLS.
SPATIAL_GROUP = (EMBEDDING, SPATIAL_CLS, SPATIAL)
TEMPORAL_GROUP = (TEMPORAL_CLS, TEMPORAL)
HEAD_GROUP = (HEAD,)
# New in stage 2: a stage-1 (or scenic) checkpoint has no adapter.
STAGE2_NEW = (ADAPTER,)
