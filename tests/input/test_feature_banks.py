"""Feature banks for skimming: the .npz round trip and the synthetic banks' designed structure."""

import numpy as np
import pytest

from avsf_jax.input import feature_banks


def test_save_and_load_round_trip_ragged_banks(tmp_path):
  image = [np.full((3, 2), 1.0), np.full((5, 2), 2.0)]
  audio = [np.full((3, 4), -1.0), np.full((5, 4), -2.0)]
  path = feature_banks.save_banks(str(tmp_path / 'val.npz'), image, audio, [3, 1], [(0, 1), (2, 4)])
  data = feature_banks.load_banks(path)
  assert [x.shape for x in data['image']] == [(3, 2), (5, 2)]
  np.testing.assert_array_equal(data['audio'][1], audio[1])
  np.testing.assert_array_equal(data['labels'], [3, 1])
  np.testing.assert_array_equal(data['segments'], [[0, 1], [2, 4]])
  with pytest.raises(ValueError, match='must agree'):
    feature_banks.save_banks(str(tmp_path / 'x.npz'), image, audio[:1], [0, 1])


def test_load_banks_reads_each_array_once(tmp_path):
  """Every video's bank is a view of one array per field, not a fresh decompression of the
  whole array per video (the LTL demo's 320 training videos took 12 GB that way)."""
  rng = np.random.default_rng(0)
  lengths = [4, 7, 5]
  image = [rng.standard_normal((n, 3)).astype(np.float32) for n in lengths]
  audio = [rng.standard_normal((n, 2)).astype(np.float32) for n in lengths]
  fused = [rng.standard_normal((n, 6)).astype(np.float32) for n in lengths]
  path = feature_banks.save_banks(str(tmp_path / 'b.npz'), image, audio, [0, 1, 2], fused=fused)
  data = feature_banks.load_banks(path)
  for name, want in (('image', image), ('audio', audio), ('fused', fused)):
    for got, expected in zip(data[name], want, strict=True):
      np.testing.assert_array_equal(got, expected)
    bases = {id(x.base) for x in data[name]}
    assert len(bases) == 1, name


def test_synthetic_banks_show_the_class_only_in_the_loud_segment():
  data = feature_banks.synthetic_banks(5, seed=0, noise=0.0, dim=8)
  assert len(data['labels']) == 40 and np.bincount(data['labels']).tolist() == [5] * 8
  lengths = [len(x) for x in data['image']]
  assert min(lengths) >= 20 and max(lengths) <= 40
  for img, aud, (a, b) in zip(data['image'], data['audio'], data['segments']):
    loud = np.linalg.norm(aud, axis=1) > 1e-6
    np.testing.assert_array_equal(np.flatnonzero(loud), np.arange(a, b))  # silent elsewhere
    # Inside the segment every pair shows the same (class) colour; decoys show another.
    seg = img[a:b]
    np.testing.assert_allclose(seg, np.repeat(seg[:1], b - a, 0), atol=1e-6)
    outside = np.delete(img, np.arange(a, b), axis=0)
    visible = outside[np.linalg.norm(outside, axis=1) > 1e-6]
    assert not np.any(np.all(np.isclose(visible, seg[0], atol=1e-6), axis=1))
  again = feature_banks.synthetic_banks(5, seed=0, noise=0.0, dim=8)
  np.testing.assert_array_equal(again['image'][3], data['image'][3])
