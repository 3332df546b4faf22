"""`init_from`: fine-tuning starts from every matching tensor of an export."""

import jax
import numpy as np
import pytest

from avsf_jax import export
from avsf_jax.models import weights as init_from
from tests.models.test_avslowfast import inputs, random_variables, tiny


@pytest.mark.slow
def test_matching_tensors_load_and_a_new_classifier_is_reinitialised(tmp_path):
  x = inputs()
  source_model, target_model = tiny(num_classes=7), tiny(num_classes=5)
  pretrained = random_variables(source_model, x, seed=1)
  export.write(
    tmp_path / 'export',
    apply_fn=lambda v, b: source_model.apply(v, b, train=False)[0],
    variables=pretrained,
    model_config={'num_classes': 7},
    class_names=[str(i) for i in range(7)],
    input_spec={k: list(v.shape[1:]) for k, v in x.items()},
    preprocessing={},
    platforms=('cpu',),
  )
  fresh = random_variables(target_model, x, seed=2)
  merged, report = init_from.load(str(tmp_path / 'export'), fresh)
  width = fresh['params']['head']['fc']['kernel'].shape[0]
  assert report.reinitialised == [
    'params/head/fc/bias (7,)->(5,)',
    f'params/head/fc/kernel ({width}, 7)->({width}, 5)',
  ]
  assert report.not_in_export == [] and report.unused_from_export == []
  np.testing.assert_array_equal(
    merged['params']['head']['fc']['kernel'], fresh['params']['head']['fc']['kernel']
  )
  np.testing.assert_array_equal(
    merged['params']['slow_res3']['block0']['conv_b']['conv']['kernel'],
    pretrained['params']['slow_res3']['block0']['conv_b']['conv']['kernel'],
  )
  np.testing.assert_array_equal(
    merged['batch_stats']['audio_stem_bn']['var'], pretrained['batch_stats']['audio_stem_bn']['var']
  )
  assert report.loaded == len(jax.tree_util.tree_leaves(fresh)) - 2
  assert 'tensors loaded' in report.summary('x') and 'params/head/fc/bias' in report.summary('x')
