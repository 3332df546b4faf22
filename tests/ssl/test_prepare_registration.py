"""`tools/prepare_dataset` reaches the self-supervised builders (UCF-101 / HMDB-51 per official
split, synthetic_av_sync) besides those of `builders.BUILDERS`."""

import pytest

from avsf_jax.input.prepare import builders, synthetic_sync_builder, ucf_hmdb
from avsf_jax.tools import prepare_dataset


@pytest.mark.parametrize('name, split', [('ucf101', 2), ('hmdb51', 3)])
def test_transfer_builders_take_the_official_split(tmp_path, name, split):
  builder = prepare_dataset.get_builder(name, str(tmp_path), split=split, short_side=160)
  assert isinstance(builder, ucf_hmdb.BUILDERS[name])
  assert builder.builder_config.split_number == split
  assert builder.builder_config.name == f'split{split}_ss160'


def test_sync_and_kinetics_style_builders(tmp_path):
  sync = prepare_dataset.get_builder(
    'synthetic_av_sync', str(tmp_path), short_side=320, keep_no_audio=True
  )
  assert isinstance(sync, synthetic_sync_builder.SyntheticAvSync)
  synthetic = prepare_dataset.get_builder('synthetic_av', str(tmp_path), short_side=320)
  assert isinstance(synthetic, builders.SyntheticAv)
  with pytest.raises(ValueError, match='unknown dataset'):
    prepare_dataset.get_builder('ucf-101', str(tmp_path))
