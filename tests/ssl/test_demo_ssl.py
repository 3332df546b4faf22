"""`make demo-ssl` end to end at a tiny size: two runs write identical JSON (spec 5.4 T5).

The real demo trains demo-scale AVSlowFast models for minutes; here the same `demo_ssl.run`
(data, three pretext variants through the loop's step, held-out pretext metrics, the export,
the `features` probes, fine-tuning from the export, the table) runs on one clip per class and
split, for two steps, with the stub backbone of `tests/ssl/helpers.py`.
"""

import json

import pytest

from avsf_jax import models
from avsf_jax.tools import demo_ssl
from tests.ssl import helpers as ssl_helpers

TINY_SPLITS = {'pretrain': 2, 'train': 1, 'test': 1}  # clips per class (12 classes)


def _tiny(real):
  def config(variant):
    config = real(variant)
    config.sync_data = {**dict(config.get('sync_data') or {}), 'clips_per_class': TINY_SPLITS}
    split = config.input.train_split
    config.optim.num_epochs = 2 * config.input.batch_size / (12 * TINY_SPLITS[split])  # 2 steps
    config.input.eval_batch_size = 16  # 12 clips, padded; a multiple of the 8 test devices
    return config

  return config


class Stub(ssl_helpers.StubBackbone):
  """The stub with the fields the tasks' statistics models clone."""

  bn_momentum: float = 0.9
  drop_pathway_rate: float = 0.0
  audio_fusion_junctions: tuple = ()


def _stub(model_config):
  return Stub(num_classes=model_config.num_classes, pathways=tuple(model_config.pathways))


@pytest.mark.slow  # two whole demo runs (12 compiles, 36 clips rendered): ~30 s on 2 busy cores
def test_two_runs_write_identical_tables(tmp_path, monkeypatch):
  monkeypatch.setenv('AVSF_DATA_DIR', str(tmp_path / 'data'))
  monkeypatch.setattr(demo_ssl, '_config', _tiny(demo_ssl._config))
  monkeypatch.setattr(models, 'build_model', _stub)
  tables = []
  for name in ('a', 'b'):
    table = demo_ssl.run(str(tmp_path / name))
    with open(tmp_path / name / 'table_a1.json', encoding='utf-8') as f:
      assert json.load(f) == table
    tables.append((tmp_path / name / 'table_a1.json').read_bytes())
    assert (tmp_path / name / 'table_a1.png').stat().st_size > 0
  assert tables[0] == tables[1]
  table = json.loads(tables[0])
  assert list(table['rows']) == [
    'random init',
    'ROT',
    'AVS',
    'ROT + AVS',
    'supervised (fine-tune all from ROT + AVS)',
  ]
  assert {r['num_test_clips'] for r in table['rows'].values()} == {12}
  assert set(table['pretext_held_out']['ROT + AVS']) >= {
    'rotation_accuracy',
    'sync_hard_accuracy',
    'sync_easy_accuracy',
  }
  checks = table['acceptance']
  assert sorted(checks) == sorted(
    [
      'rotation_accuracy (ROT + AVS)',
      'rotation_accuracy (ROT)',
      'sync_hard_accuracy (ROT + AVS)',
      'sync_easy_accuracy (ROT + AVS)',
      'sync_hard_accuracy (AVS)',
      'sync_easy_accuracy (AVS)',
      'probe_top1_margin (ROT + AVS - random init)',
      'probe_rate_margin (ROT + AVS - random init)',
    ]
  )
  assert all(c['pass'] == (c['value'] >= c['threshold']) for c in checks.values())
