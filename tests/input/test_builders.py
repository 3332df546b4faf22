"""Dataset builders on small generated folders, `skipped.jsonl`, and the synthetic dataset."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from array_record.python import array_record_data_source
from PIL import Image

from avsf_jax.input.prepare import annotations, builders, synthetic


@pytest.mark.slow
def test_kinetics_build_keeps_good_clips_and_reports_every_bad_one(kinetics_prepared):
  _, builder = kinetics_prepared
  assert builder.info.splits['train'].num_examples == 9 + 2  # + no-audio + untrimmed segment
  assert builder.info.splits['validation'].num_examples == 3
  with open(os.path.join(builder.data_dir, 'skipped.jsonl')) as f:
    skipped = {json.loads(line)['key'][:11]: json.loads(line)['reason'] for line in f}
  assert skipped == {
    'zerolenxxxx': 'unreadable',
    'garbagexxxx': 'unreadable',
    'truncatexxx': 'unreadable',
    'missingxxxx': 'missing_file',
  }


def test_kinetics_examples_hold_frames_audio_and_metadata(kinetics_prepared):
  _, builder = kinetics_prepared
  examples = {e['video_id'].decode(): e for e in builder.as_data_source('train')}
  clip = examples['trvid00004x']
  assert clip['num_frames'] == 75 and clip['fps'] == 25
  assert (clip['height'], clip['width']) == (48, 64) and clip['has_audio']
  assert clip['audio'].dtype == np.int16 and clip['audio'].size == 48000
  assert builder.info.features['label'].int2str(clip['label']) == 'air drumming'
  mute = examples['noaudioxxxx']
  assert not mute['has_audio'] and not mute['audio'].any()
  segment = examples['untrimmedxx']  # [1 s, 2 s) of a 4 s file
  assert segment['num_frames'] == 25 and segment['audio'].size == 16000
  assert segment['path'].decode().endswith('untrimmedxx.mkv')
  # Frames live one per record in the split's frame store, each example a contiguous run.
  store = array_record_data_source.ArrayRecordDataSource(
    [builders.frames_path(builder.data_dir, 'train')]
  )
  runs = sorted((int(e['frame_offset']), int(e['num_frames'])) for e in examples.values())
  assert [offset for offset, _ in runs] == list(np.cumsum([0] + [n for _, n in runs[:-1]]))
  assert len(store) == sum(n for _, n in runs)
  offset = int(clip['frame_offset'])
  images = [np.asarray(Image.open(io.BytesIO(store[offset + i]))) for i in (0, 74)]
  assert images[0].shape == (48, 64, 3)
  # write_clip scrolls one random image 2 px per frame: frame 74 is frame 0 rolled by 148 px.
  assert np.abs(np.roll(images[0], 148, axis=1).astype(int) - images[1]).mean() < 12


def test_index_videos_prefers_trimmed_clips(tmp_path):
  (tmp_path / 'a').mkdir()
  for name in ('abc_000001_000011.mp4', 'abc.webm', 'x-y_z.mkv', 'notes.txt'):
    (tmp_path / 'a' / name).write_bytes(b'')
  found = annotations.index_videos(str(tmp_path))
  assert found == {
    'abc': (str(tmp_path / 'a' / 'abc_000001_000011.mp4'), True),
    'x-y_z': (str(tmp_path / 'a' / 'x-y_z.mkv'), False),
  }


def test_charades_and_epic_annotations_are_parsed(tmp_path):
  (tmp_path / 'Charades_v1_train.csv').write_text(
    'id,subject,scene,actions,length\nAB12C,s,kitchen,c092 11.90 21.20;c147 0.00 12.60,30\nDE34F,s,hall,,20\n'
  )
  (tmp_path / 'AB12C.mp4').write_bytes(b'')
  records = annotations.charades_records(str(tmp_path))['train']
  assert records[0]['labels'] == [92, 147] and records[0]['segments'][0] == (92, 11.9, 21.2)
  assert records[1]['labels'] == [] and records[1]['path'] is None
  (tmp_path / 'EPIC_100_train.csv').write_text(
    'narration_id,participant_id,video_id,start_timestamp,stop_timestamp,verb_class,noun_class\n'
    'P01_01_0,P01,P01_01,00:00:01.50,00:01:02.25,3,17\n'
  )
  (tmp_path / 'P01').mkdir()
  (tmp_path / 'P01' / 'P01_01.MP4').write_bytes(b'')
  (record,) = annotations.epic_records(str(tmp_path))['train']
  assert (record['start'], record['end'], record['label_verb'], record['label_noun']) == (
    1.5,
    62.25,
    3,
    17,
  )
  assert record['path'].endswith('P01_01.MP4')
  assert annotations.epic_class_names(str(tmp_path)) is None
  (tmp_path / 'EPIC_100_verb_classes.csv').write_text('id,key,instances\n0,take,[]\n2,put,[]\n')
  (tmp_path / 'EPIC_100_noun_classes.csv').write_text('id,key,instances\n0,tap,[]\n1,plate,[]\n')
  assert annotations.epic_class_names(str(tmp_path)) == {
    'verb': ['take', 'verb_1', 'put'],
    'noun': ['tap', 'plate'],
  }


def test_synthetic_classes_differ_in_exactly_one_factor():
  low = synthetic.clip_media('red_left_low', seed=7)
  high = synthetic.clip_media('red_left_high', seed=7)
  right = synthetic.clip_media('red_right_low', seed=7)
  blue = synthetic.clip_media('blue_left_low', seed=7)
  np.testing.assert_array_equal(low[0], high[0])  # same video, different sound
  assert not np.allclose(low[2], high[2])
  np.testing.assert_array_equal(low[0][0], right[0][0])  # same first frame, different motion
  assert not np.array_equal(low[0][10], right[0][10])
  np.testing.assert_array_equal(low[2], right[2])
  np.testing.assert_array_equal(low[2], blue[2])  # same sound and motion, different colour
  assert not np.array_equal(low[0], blue[0])
  again = synthetic.clip_media('red_left_low', seed=7)
  np.testing.assert_array_equal(low[0], again[0])
  np.testing.assert_array_equal(low[2], again[2])
  assert len(set(synthetic.CLASS_NAMES)) == 12


def test_synthetic_background_pans_with_the_square():
  """Rows the square never covers move as a whole: right for a right-moving square, left for a
  left-moving one, by half the square's distance (hand-checked shift search)."""
  for direction, sign in (('right', 1), ('left', -1)):
    frames, fps, _, _ = synthetic.clip_media(f'green_{direction}_low', seed=11)
    rows = ~(frames == np.array(synthetic.OUTLINE)).all(-1).any(axis=(0, 2))  # never the square
    later = frames[fps]  # one second in
    shifts = [
      s for s in range(-60, 61) if np.array_equal(np.roll(frames[0], s, 1)[rows], later[rows])
    ]
    assert len(shifts) == 1 and np.sign(shifts[0]) == sign and 15 <= abs(shifts[0]) <= 25, shifts


def test_synthetic_squares_share_a_white_border_around_their_colour():
  for colour in synthetic.COLOURS:
    frame = synthetic.clip_media(f'{colour}_left_low', seed=5)[0][0]
    ys, xs = np.nonzero((frame == np.array(synthetic.OUTLINE)).all(-1))
    inside = frame[ys.min() + 3 : ys.max() - 2, xs.min() + 3 : xs.max() - 2]
    assert inside.shape[0] >= 14 and (inside == np.array(synthetic.COLOURS[colour])).all()
    ring = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) - inside.shape[0] * inside.shape[1]
    assert len(ys) == ring  # exactly the 3-pixel frame around the coloured inside


_ENCODE_THREE_TIMES = """
import sys
from avsf_jax.input.prepare import synthetic
frames, fps, audio, rate = synthetic.clip_media('blue_left_high', seed=123)
for i in range(3):
  synthetic.write_video(f'{sys.argv[1]}/{i}.mp4', frames, fps, audio, rate)
"""


def test_write_video_writes_the_same_bytes_every_time(tmp_path):
  """One clip encoded three times in a process gives the same bytes (with swscale's RGB
  conversion, and with x264's own threads until `write_video` asked for one thread and one
  lookahead thread, it did not: docs/data.md). In a fresh process, as a build's workers are."""
  subprocess.run([sys.executable, '-c', _ENCODE_THREE_TIMES, str(tmp_path)], check=True)
  written = [(tmp_path / f'{i}.mp4').read_bytes() for i in range(3)]
  assert written[0] == written[1] == written[2]


_ENCODE_SIX = """
import hashlib, sys
from avsf_jax.input.prepare import synthetic
for seed, name in enumerate(synthetic.CLASS_NAMES[:6]):
  synthetic.write_video(f'{sys.argv[1]}/x.mp4', *synthetic.clip_media(name, seed))
  print(hashlib.sha256(open(f'{sys.argv[1]}/x.mp4', 'rb').read()).hexdigest())
"""


def test_write_video_does_not_read_memory_nobody_wrote(tmp_path):
  """x264's assembly reads memory nobody wrote, so a clip's bytes depended on the heap's
  leftovers, i.e. on what the process had run before: a build's pooled workers and two serial
  builds wrote different files (docs/data.md). glibc's MALLOC_PERTURB_ fills that memory with
  a chosen byte; with the assembly, 5 of these 6 clips differed between 0 and 170. With
  x264's C code (`write_video`'s `no-asm`) none may."""
  digests = []
  for perturb in ('0', '170'):
    out = subprocess.run(
      [sys.executable, '-c', _ENCODE_SIX, str(tmp_path)],
      check=True,
      capture_output=True,
      text=True,
      env={**os.environ, 'MALLOC_PERTURB_': perturb},
    )
    digests.append(out.stdout.split())
  assert len(digests[0]) == 6 and digests[0] == digests[1]


def test_every_builder_is_reachable_by_name(tmp_path):
  for name in ('kinetics400', 'kinetics_sounds', 'synthetic_av', 'charades', 'epic_kitchens'):
    builder = builders.get_builder(name, str(tmp_path))
    assert builder.name == name and not builders.is_prepared(builder)
  assert len(builders.get_builder('kinetics_sounds', str(tmp_path)).class_names()) == 32
  assert (
    builders.get_builder('epic_kitchens', str(tmp_path)).info.features['label_noun'].num_classes
    == 300
  )
