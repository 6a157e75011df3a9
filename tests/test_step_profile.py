"""vivit_adapter.benchmarks.step_profile: the per-part time of a tiny trainer step."""

from vivit_adapter.benchmarks import step_cases, step_profile

TINY = (('spatial_transformer.num_layers', 1), ('temporal_transformer.num_layers', 1))


def test_part_of_names_direction_and_module():
  fwd = ('jit(train_step)/jvp(ViViTFactorisedEncoder)/SpatialTransformer/MlpBlock_0/'
         'Dense_0/dot_general')
  bwd = ('jit(train_step)/transpose(jvp(ViViTFactorisedEncoder))/x/'
         'MultiHeadDotProductAttention_0/query/dot_general')
  assert step_profile.part_of(fwd) == 'forward MLP dense layers'
  assert step_profile.part_of(bwd) == 'backward attention q/k/v projections'
  assert step_profile.part_of('jit(train_step)/sgd/mul') == 'optimizer and metrics'


def test_profile_of_a_tiny_step_covers_forward_and_backward_parts():
  case = step_cases.Case('Ti/16x2', 'baseline', 4, 1, 32, num_classes=10,
                         model_overrides=TINY)
  seconds = step_profile.profile_case(case, steps=1, warmup=1)
  for part in ('forward MLP dense layers', 'backward MLP dense layers',
               'forward attention q/k/v projections', 'backward attention q/k/v projections'):
    assert seconds.get(part, 0) > 0, (part, seconds)
  table = step_profile.format_table(seconds)
  assert table.startswith('| part | s/step | share |') and 'forward LayerNorm' in table
