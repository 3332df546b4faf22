"""The synthetic_untrimmed generator (spec §8.1): its designed properties, and real mp4 files."""

import csv

import av
import numpy as np
import pytest

from avsf_jax.input.prepare import synthetic_untrimmed as su


def _segment_frames(v: su.Video) -> slice:
  return slice(int(np.ceil(v.segment_start_s * su.FPS)), int(np.ceil(v.segment_end_s * su.FPS)))


def _segment_samples(v: su.Video) -> slice:
  return slice(
    int(round(v.segment_start_s * su.SAMPLE_RATE)), int(round(v.segment_end_s * su.SAMPLE_RATE))
  )


@pytest.fixture(scope='module')
def videos():
  return [su.video(name, seed=7 + i) for i, name in enumerate(su.CLASS_NAMES)]


def test_layout_and_pairs(videos):
  v = videos[0]
  assert v.frames.shape == (320, 48, 48, 3) and v.frames.dtype == np.uint8
  assert v.audio.shape == (640000,)
  times = su.pair_times()
  assert len(times) == 80 and times[1] == 0.5
  assert len(su.CLASS_NAMES) == 8 and [x.label for x in videos] == list(range(8))


def test_segment_is_6_s_at_a_uniform_place_and_holds_12_pairs(videos):
  starts = np.array([su.video('red_bounce', seed).segment_start_s for seed in range(40)])
  assert starts.min() >= 0 and starts.max() <= 34
  assert starts.min() < 8 and starts.max() > 26  # spread over the video
  for v in videos:
    assert v.segment_end_s - v.segment_start_s == pytest.approx(6.0)
    first, stop = su.segment_pairs(v.segment_start_s, v.segment_end_s, su.pair_times())
    assert stop - first == 12  # 15 % of 80
    # The class object is drawn exactly in the segment's frames.
    colour = np.array(su.COLOURS[su.CLASS_NAMES[v.label].split('_')[0]])
    shows = np.all(v.frames == colour, axis=-1).any(axis=(1, 2))
    expect = np.zeros(len(shows), bool)
    expect[_segment_frames(v)] = True
    np.testing.assert_array_equal(shows, expect)


def test_generation_is_deterministic():
  a, b = su.video('blue_drift', 3), su.video('blue_drift', 3)
  np.testing.assert_array_equal(a.frames, b.frames)
  np.testing.assert_array_equal(a.audio, b.audio)
  assert not np.array_equal(a.audio, su.video('blue_drift', 4).audio)


def test_decoys_are_silent_static_other_coloured_and_half_of_the_background(videos):
  fractions = []
  for v in videos:
    inside = np.zeros(len(v.audio), bool)
    inside[_segment_samples(v)] = True
    rms_out = np.sqrt(np.mean(v.audio[~inside] ** 2))
    np.testing.assert_allclose(rms_out, su.dbfs(su.NOISE_DBFS), rtol=0.05)  # noise only
    assert np.abs(v.audio[inside]).max() > 0.8 * su.dbfs(su.ACTION_DBFS)
    seg = _segment_frames(v)
    assert not v.decoy_frames[seg].any()
    background = np.delete(np.arange(len(v.frames)), np.arange(len(v.frames))[seg])
    fractions.append(v.decoy_frames[background].mean())
    decoy_frames = v.frames[v.decoy_frames]
    if len(decoy_frames):
      # Static within a chunk: consecutive decoy frames of one chunk are identical.
      np.testing.assert_array_equal(decoy_frames[0], decoy_frames[1])
  assert 0.3 < np.mean(fractions) < 0.7


def test_label_depends_only_on_the_action_segment():
  """Same seed, same colour, other motion: identical outside the segment, different inside."""
  a, b = su.video('green_bounce', 11), su.video('green_drift', 11)
  assert a.segment_start_s == b.segment_start_s
  seg_f, seg_a = _segment_frames(a), _segment_samples(a)
  keep_f = np.ones(len(a.frames), bool)
  keep_f[seg_f] = False
  keep_a = np.ones(len(a.audio), bool)
  keep_a[seg_a] = False
  np.testing.assert_array_equal(a.frames[keep_f], b.frames[keep_f])
  np.testing.assert_array_equal(a.audio[keep_a], b.audio[keep_a])
  assert not np.array_equal(a.frames[seg_f], b.frames[seg_f])

  def peak_hz(x):
    spectrum = np.abs(np.fft.rfft(x))
    return np.fft.rfftfreq(len(x), 1 / su.SAMPLE_RATE)[spectrum.argmax()]

  assert abs(peak_hz(b.audio[seg_a]) - su.HUM_HZ) < 2  # drift hums
  assert abs(peak_hz(a.audio[seg_a]) - su.CLICK_HZ) < 100  # bounce clicks


def test_bounce_clicks_at_every_floor_contact():
  frames, audio = su.trimmed_clip('yellow_bounce', 0)
  assert frames.shape == (16, 48, 48, 3) and audio.shape == (32000,)
  loud = np.abs(audio) > 0.1
  onsets = np.flatnonzero(loud[1:] & ~loud[:-1]) / su.SAMPLE_RATE
  np.testing.assert_allclose(np.diff(onsets[np.r_[True, np.diff(onsets) > 0.1]]), 1 / 3, atol=2e-3)


def test_generate_writes_decodable_mp4s_and_csvs(tmp_path):
  counts = su.generate(str(tmp_path), videos_per_class={'val': 1}, clips_per_class=1, duration_s=9)
  assert counts == {'val': 8, 'clips': 8}
  with open(tmp_path / 'val.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['label'] for r in rows] == list(su.CLASS_NAMES)
  start = float(rows[0]['segment_start'])
  assert 0 <= start <= 3 and float(rows[0]['segment_end']) == pytest.approx(start + 6, abs=1e-3)
  path = tmp_path / 'val' / rows[0]['label'] / f'{rows[0]["video_id"]}.mp4'
  with av.open(str(path)) as container:
    frames = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
  with av.open(str(path)) as container:
    audio = container.streams.audio[0]
    assert audio.sample_rate == 16000
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
  assert len(frames) == 72 and frames[0].shape == (48, 48, 3)
  assert abs(len(samples) - 9 * 16000) < 3000
  assert (tmp_path / 'clips' / 'red_bounce' / 'clip0000.mp4').exists()


def test_pairs_are_the_frame_at_each_time_stamp_and_the_next_second_of_audio(videos):
  v = videos[1]  # a drift: it hums for the whole segment
  frames, audio = su.pair_media(v)
  assert frames.shape == (80, 48, 48, 3) and audio.shape == (80, 16000)
  np.testing.assert_array_equal(frames[7], v.frames[28])  # 3.5 s at 8 fps
  np.testing.assert_array_equal(audio[7], v.audio[56000:72000])
  np.testing.assert_array_equal(audio[79, 8000:], 0.0)  # 39.5 s + 1 s runs past the end
  first, stop = su.segment_pairs(v.segment_start_s, v.segment_end_s, su.pair_times())
  loud = np.abs(audio).max(axis=1) > 0.5 * su.dbfs(su.ACTION_DBFS)
  assert loud[first:stop].all() and loud.sum() <= stop - first + 2  # the second before it too


def test_one_frame_does_not_tell_the_motion():
  """The object's position in a clip's first frame has the same distribution under bounce and
  drift (spec §8.1: image-only capped at 50 %): its height is a bounce's at a uniform phase."""

  def first_top_rows(name):
    rows = []
    for seed in range(300):
      frames, _ = su.trimmed_clip(name, seed)
      rows.append(np.flatnonzero((frames[0] != su.BACKGROUND).any(axis=(1, 2)))[0])
    return np.asarray(rows)

  bounce, drift = first_top_rows('red_bounce'), first_top_rows('red_drift')
  room = su.SIZE - su.OBJECT_SIDE
  for rows in (bounce, drift):
    assert rows.min() >= round(0.2 * room) - 1 and rows.max() == room
  # Two samples of one distribution: means and quartiles agree within sampling error (the
  # old generator put every bounce on the floor, row 38, and drifts anywhere in 0..38).
  assert abs(bounce.mean() - drift.mean()) < 2.0
  np.testing.assert_allclose(
    np.percentile(bounce, [25, 50, 75]), np.percentile(drift, [25, 50, 75]), atol=3
  )


def test_bounce_clicks_when_the_object_is_on_the_floor():
  """With a random starting phase, every click still starts on a floor contact: the frames
  nearest the onsets show the object at its lowest (top row = room), give or take the frame's
  1/8 s of motion."""
  room = su.SIZE - su.OBJECT_SIDE
  for seed in range(5):
    frames, audio = su.trimmed_clip('green_bounce', seed)
    tops = np.asarray(
      [np.flatnonzero((f != su.BACKGROUND).any(axis=(1, 2)))[0] for f in frames], float
    )
    loud = np.abs(audio) > 0.1
    onsets = np.flatnonzero(loud[1:] & ~loud[:-1]) / su.SAMPLE_RATE
    onsets = onsets[np.r_[True, np.diff(onsets) > 0.1]]
    for onset in onsets:
      nearest = int(round(onset * su.FPS))
      if nearest < len(frames):
        # Within half a frame (1/16 s) of a contact the height is at most
        # 0.8·room·sin(π·3/16) = 16.9 px above the floor.
        assert tops[nearest] >= room - 0.8 * room * np.sin(np.pi * 3 / 16) - 1
