"""avsf_jax.input.prepare.synthetic_ava: the files read back through the AVA readers, and the
designed properties (sing is audio-only and single-actor, stand is not evaluated, boxes never
overlap, the detector's statistics, determinism)."""

import os

import numpy as np
import pytest
from PIL import Image

from avsf_jax.evaluation import ava as ava_eval
from avsf_jax.input import media
from avsf_jax.input.prepare import ava_files
from avsf_jax.input.prepare import synthetic_ava as sa


@pytest.fixture(scope='module')
def tables(tmp_path_factory):
  """The full-size dataset's annotation files (no media: planning only)."""
  root = str(tmp_path_factory.mktemp('synthetic_ava_tables'))
  return root, sa.generate(root, seed=3, write_media=False)


def _annotations(root, name):
  return os.path.join(root, 'annotations', name)


def test_files_read_back_through_the_ava_readers(tables):
  root, info = tables
  assert info['keyframe_range'] == [902, 938]
  assert info['videos'] == {'train': [f'syntrain{i:02d}' for i in range(8)], 'val': [
    'synval00', 'synval01', 'synval02']}  # fmt: skip
  labels = ava_files.read_label_map(_annotations(root, 'label_map.pbtxt'))
  assert labels == {1: 'walk', 2: 'jump', 4: 'wave', 5: 'carry', 6: 'sing'}
  for split, videos in info['videos'].items():
    rows = ava_files.read_boxes(_annotations(root, f'synthetic_ava_{split}.csv'), num_classes=6)
    keyframes = {(r.video_id, r.timestamp) for r in rows}
    assert keyframes == {(v, t) for v in videos for t in range(902, 939)}  # every keyframe has GT
    assert {r.action_id for r in rows} == {1, 2, 3, 4, 5, 6}
    detections = ava_files.read_boxes(
      _annotations(root, f'synthetic_ava_{split}_predicted_boxes.csv'), detections=True
    )
    proposals = ava_files.load_proposals(_annotations(root, f'synthetic_ava_{split}_proposals.pkl'))
    assert sum(len(v) for v in proposals.values()) == len(detections)
    frames = ava_files.read_frame_list(os.path.join(root, 'frame_lists', f'{split}.csv'))
    assert len(frames) == len(videos) * 40 * 30
    assert frames[31].path == f'{videos[0]}/{videos[0]}_000032.jpg' and frames[31].frame_id == 31
  excluded = ava_files.read_excluded_timestamps(
    _annotations(root, 'synthetic_ava_val_excluded_timestamps.csv')
  )
  assert len(excluded) == 2 * 3 and {v for v, _ in excluded} == set(info['videos']['val'])
  train = ava_files.read_boxes(
    _annotations(root, 'synthetic_ava_train_predicted_boxes_include_negative.csv'), num_classes=6
  )
  assert any(r.action_id == -1 for r in train) and any(r.person_id == -1 for r in train)


def _plans(seed=0, count=11):
  return [sa.plan_video(f'v{i}', seed * 100 + i) for i in range(count)]


def test_sing_is_single_actor_half_the_time_and_labels_average_about_1_6():
  boxes = [row for plan in _plans() for row in sa.keyframe_boxes(plan)]
  actors_at = {}
  for plan in _plans():
    for timestamp, *_ in sa.keyframe_boxes(plan):
      actors_at[(plan.video_id, timestamp)] = actors_at.get((plan.video_id, timestamp), 0) + 1
  singles = [(p.video_id, r) for p in _plans() for r in sa.keyframe_boxes(p)]
  single_rows = [r for vid, r in singles if actors_at[(vid, r[0])] == 1]
  assert all(actors_at[(vid, r[0])] == 1 for vid, r in singles if sa.SING in r[3])
  sing_rate = np.mean([sa.SING in r[3] for r in single_rows])
  assert 0.3 < sing_rate < 0.7
  labels_per_box = np.mean([len(r[3]) for r in boxes])
  assert 1.4 < labels_per_box < 2.0
  assert all(len(r[3] & {sa.WALK, sa.JUMP, sa.STAND}) == 1 for r in boxes)


def test_sing_is_audio_only():
  """Frames drawn from a plan whose singers are removed are identical; the audio is not."""
  plan = next(p for p in _plans() if any(sa.SING in a.actions for s in p.scenes for a in s.actors))
  silent_scenes = tuple(
    sa.Scene(
      s.start_s,
      s.end_s,
      tuple(
        sa.Actor(a.person, a.lane, a.x_start, a.bottom, a.direction, a.actions - {sa.SING})
        for a in s.actors
      ),
    )
    for s in plan.scenes
  )
  silent = sa.VideoPlan(plan.video_id, plan.duration_s, plan.background, silent_scenes)
  for t in np.arange(0.0, plan.duration_s, 0.37):
    np.testing.assert_array_equal(sa.render_frame(plan, t), sa.render_frame(silent, t))
  audio, quiet = sa.render_audio(plan, 0)[0], sa.render_audio(silent, 0)[0]
  for scene in plan.scenes:
    window = slice(scene.start_s * sa.SAMPLE_RATE, (scene.start_s + 1) * sa.SAMPLE_RATE)
    spectrum = np.abs(np.fft.rfft(audio[window]))  # 1-Hz bins over one second
    tone = spectrum[int(sa.SING_HZ)] / np.median(spectrum)
    singing = any(sa.SING in a.actions for a in scene.actors)
    assert (tone > 50) == singing, (scene, tone)
  assert np.abs(np.fft.rfft(quiet[: sa.SAMPLE_RATE]))[int(sa.SING_HZ)] < 50 * np.median(
    np.abs(np.fft.rfft(quiet[: sa.SAMPLE_RATE]))
  )


def test_actors_never_overlap_and_stay_in_the_frame():
  for plan in _plans(seed=1):
    for scene in plan.scenes:
      for t in np.arange(scene.start_s, scene.end_s, 0.25):
        boxes = [sa.body_box(a, scene, t) for a in scene.actors]
        for box in boxes:
          assert 0 <= box[0] and box[2] + sa.CARRY_SIZE / 2 <= sa.WIDTH
          assert box[1] - sa.HAND_SIZE - 2 >= 0 and box[3] <= sa.HEIGHT
        xs = sorted((b[0], b[2] + sa.CARRY_SIZE / 2) for b in boxes)
        assert all(a[1] <= b[0] for a, b in zip(xs, xs[1:]))


def test_walkers_and_jumpers_move_and_the_others_do_not():
  for plan in _plans(seed=2):
    for scene in plan.scenes:
      for actor in scene.actors:
        boxes = np.array([sa.body_box(actor, scene, scene.start_s + i / sa.FPS) for i in range(15)])
        path = np.abs(np.diff(boxes, axis=0)).sum()  # pixels travelled in half a second
        assert (path > 5.0) == bool(actor.actions & {sa.WALK, sa.JUMP}), actor.actions


def test_detector_statistics():
  true, false, ious, num_truth, keyframes = [], [], [], 0, 0
  for i, plan in enumerate(_plans(seed=4)):
    truth = sa.keyframe_boxes(plan)
    detected = sa.detector_boxes(truth, np.random.default_rng(i))
    gt = {(t, pid): box for t, pid, box, _ in truth}
    num_truth += len(truth)
    keyframes += len({row[0] for row in truth})
    true += [d for d in detected if d[3] != -1]
    false += [d for d in detected if d[3] == -1]
    ious += [ava_eval.iou([d[1]], [gt[(d[0], d[3])]])[0, 0] for d in detected if d[3] != -1]
  assert len(true) / num_truth == pytest.approx(0.95, abs=0.03)  # 5% missed
  assert all(0.85 <= d[2] <= 1.0 for d in true) and all(0.3 <= d[2] <= 0.9 for d in false)
  assert len(false) / keyframes == pytest.approx(1.0, abs=0.15)  # 0-2 per keyframe
  assert np.mean([d[2] >= 0.8 for d in false]) == pytest.approx(1 / 6, abs=0.06)
  # 3% jitter per edge: every true detection overlaps its person's box with IoU > 0.6, and
  # a good part exceed the 0.9 that makes them labelled training boxes.
  ious = np.array(ious)
  assert ious.min() > 0.6 and 0.2 < np.mean(ious > 0.9) < 0.9


def test_deterministic_in_the_seed(tmp_path):
  names = ('synthetic_ava_train.csv', 'synthetic_ava_val_predicted_boxes.csv')
  contents = []
  for seed, folder in ((5, 'a'), (5, 'b'), (6, 'c')):
    sa.generate(str(tmp_path / folder), seed=seed, videos={'train': 2, 'val': 1}, write_media=False)
    contents.append([open(_annotations(str(tmp_path / folder), n)).read() for n in names])
  assert contents[0] == contents[1]
  assert contents[0][0] != contents[2][0] and contents[0][1] != contents[2][1]


def test_media_frames_and_audio(tmp_path):
  """A 5-s video: JPEG frames numbered from 1 that show the rendered frame, and an mp4 whose
  16-kHz audio lasts the segment."""
  root = str(tmp_path)
  info = sa.generate(root, seed=0, videos={'train': 0, 'val': 1}, duration_s=5)
  assert info['keyframe_range'] == [902, 903]
  video_id = info['videos']['val'][0]
  files = sorted(os.listdir(os.path.join(root, 'frames', video_id)))
  assert len(files) == 150 and files[0] == f'{video_id}_000001.jpg'
  plan_seed = int(np.random.SeedSequence([0, 1, 0]).generate_state(1)[0])
  plan = sa.plan_video(video_id, plan_seed, 5)
  image = np.asarray(Image.open(os.path.join(root, 'frames', video_id, files[61])), np.float32)
  expected = sa.render_frame(plan, 61 / sa.FPS).astype(np.float32)
  assert np.abs(image - expected).mean() < 4.0
  audio = media.decode_audio(os.path.join(root, 'videos', f'{video_id}.mp4'), sa.SAMPLE_RATE)
  assert abs(audio.shape[-1] / sa.SAMPLE_RATE - 5.0) < 0.1
