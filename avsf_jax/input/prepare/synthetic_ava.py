"""The `synthetic_ava` dataset: small AVA-layout videos whose actions need motion, appearance or audio.

Spec `ava.md` 7.1. Each video is a "segment" laid out like AVA's 900-s cut (frame 0 is t = 900 s,
keyframes at whole seconds from 902), 96x128 at 30 fps, written as per-frame JPEGs
(`frames/<vid>/<vid>_%06d.jpg`, numbered from 1 as ffmpeg does) plus a companion mp4 (H.264 +
16-kHz mono AAC) for the audio. Every file of the real layout is written: box CSVs, excluded
timestamps, `label_map.pbtxt`, frame lists, person-detector boxes (CSV and proposals pickle) and
the training file of GT plus detections with IoU > 0.9 and unlabelled negatives.

A video is a sequence of scenes of 3-6 s; a scene has 1-3 actors (coloured upright rectangles
with a persistent `person_id`, each in its own vertical lane, so they never occlude) over a
textured background, and each actor keeps its actions for the whole scene:
- 1 walk: horizontal translation at 30 px/s, bouncing inside the lane (needs motion);
- 2 jump: vertical oscillation at 2 Hz (needs motion);
- 3 stand: static; trained but not evaluated (absent from the label map);
- 4 wave: a small white "hand" above the head, flickering at 3 Hz (appearance + motion);
- 5 carry: a small magenta square on the right side (one frame is enough);
- 6 sing: audio only. A 660-Hz tone plays while a singing actor is on screen; singing happens
  only in single-actor scenes, with p = 0.5, so nothing visual tells it apart.
walk, jump and stand are exclusive; wave and carry are added with p = 0.25 each (about 1.6-1.7
labels per box).

Deviations from the spec's 7.1 numbers, for a 128-px-wide frame holding three actors side by
side without occlusion: actors are 18-28 px wide (not 20-40) and 1.5-2.5x as tall (at most 70 px,
so that a jumping actor and its hand stay in the 96-px frame). False-positive
detector scores are U(0.3, 0.9) as specified, so 1/6 of them (not "about 1/8") pass 0.8.

  python -m avsf_jax.input.prepare.synthetic_ava --output=DIR [--seed=0] [--nomedia]

Planning (`plan_video`) is pure and cheap; rendering (`render_frame`, `render_audio`) draws from
a plan, so the designed properties can be tested without writing media. Everything is a
function of the seed. No TensorFlow here.
"""

import csv
import dataclasses
import json
import math
import os
import pickle

import numpy as np
from PIL import Image

from avsf_jax.input.prepare import synthetic

CLASSES = {1: 'walk', 2: 'jump', 3: 'stand', 4: 'wave', 5: 'carry', 6: 'sing'}
EVALUATED_CLASS_IDS = (1, 2, 4, 5, 6)
WALK, JUMP, STAND, WAVE, CARRY, SING = 1, 2, 3, 4, 5, 6
HEIGHT, WIDTH, FPS = 96, 128, 30
SAMPLE_RATE = 16000
SING_HZ = 660.0
SEGMENT_START_S = 900  # AVA's cut starts at 900 s; frame 0 is this second.
FIRST_KEYFRAME_OFFSET_S = 2  # keyframes from 902, as AVA's 902..1798
DURATION_S = 40
SPLITS = {'train': 8, 'val': 3}
EXCLUDED_PER_VAL_VIDEO = 2
WALK_SPEED = 30.0  # px/s
JUMP_HZ, JUMP_AMPLITUDE = 2.0, 5.0
WAVE_HZ, HAND_SIZE = 3.0, 6
CARRY_SIZE = 8
CARRY_COLOUR = (255, 0, 255)
HAND_COLOUR = (255, 255, 255)
ACTOR_COLOURS = (
  (220, 40, 40),
  (40, 200, 60),
  (50, 80, 230),
  (230, 210, 40),
  (40, 210, 220),
  (240, 130, 30),
)
DETECTOR_JITTER = 0.03  # std of each edge, as a fraction of the box size
DETECTOR_MISS = 0.05
TRUE_SCORE, FALSE_SCORE = (0.85, 1.0), (0.3, 0.9)
MAX_FALSE_POSITIVES = 2
TRAIN_MATCH_IOU = 0.9


@dataclasses.dataclass(frozen=True)
class Person:
  person_id: int
  colour: tuple[int, int, int]
  width: int
  height: int


@dataclasses.dataclass(frozen=True)
class Actor:
  """One person during one scene: lane, starting place, actions."""

  person: Person
  lane: tuple[float, float]  # allowed x range of the body's left edge
  x_start: float
  bottom: float  # y of the body's lower edge at rest
  direction: float  # +1 right, -1 left (walk)
  actions: frozenset[int]


@dataclasses.dataclass(frozen=True)
class Scene:
  start_s: int  # seconds from the segment start
  end_s: int
  actors: tuple[Actor, ...]


@dataclasses.dataclass(frozen=True)
class VideoPlan:
  video_id: str
  duration_s: int
  background: np.ndarray  # (HEIGHT, WIDTH, 3) uint8
  scenes: tuple[Scene, ...]

  def scene_at(self, t: float) -> Scene:
    for scene in self.scenes:
      if scene.start_s <= t < scene.end_s:
        return scene
    return self.scenes[-1]


def _rng(seed: int, *keys: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def plan_video(video_id: str, seed: int, duration_s: int = DURATION_S) -> VideoPlan:
  """Scenes, actors and actions of one video; deterministic in (video_id's seed)."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(60, 120, size=(HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
  background = np.kron(blocks, np.ones((8, 8, 1), np.uint8))
  colours = rng.permutation(len(ACTOR_COLOURS))
  persons = []
  for i in range(4):
    width = int(rng.integers(18, 29))
    height = min(int(round(width * rng.uniform(1.5, 2.5))), 70)
    persons.append(Person(i + 1, ACTOR_COLOURS[colours[i]], width, height))
  scenes, start = [], 0
  while start < duration_s:
    end = min(start + int(rng.integers(3, 7)), duration_s)
    count = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    chosen = sorted(rng.choice(len(persons), size=count, replace=False))
    lane_width = WIDTH / count
    actors = []
    for k, index in enumerate(chosen):
      person = persons[index]
      lane = (k * lane_width + 1.0, (k + 1) * lane_width - person.width - CARRY_SIZE // 2 - 1.0)
      motion = int(rng.choice([WALK, JUMP, STAND], p=[0.4, 0.3, 0.3]))
      actions = {motion}
      if rng.random() < 0.25:
        actions.add(WAVE)
      if rng.random() < 0.25:
        actions.add(CARRY)
      if count == 1 and rng.random() < 0.5:
        actions.add(SING)
      low = person.height + HAND_SIZE + 3 + JUMP_AMPLITUDE
      bottom = float(rng.uniform(low, HEIGHT - 1 - JUMP_AMPLITUDE))
      actors.append(
        Actor(
          person,
          lane,
          float(rng.uniform(*lane)),
          bottom,
          float(rng.choice([-1.0, 1.0])),
          frozenset(actions),
        )
      )
    scenes.append(Scene(start, end, tuple(actors)))
    start = end
  return VideoPlan(video_id, duration_s, background, tuple(scenes))


def _bounce(position: float, low: float, high: float) -> float:
  """`position` reflected into [low, high] (a walker turning at the lane's ends)."""
  span = high - low
  if span <= 0:
    return low
  phase = (position - low) % (2 * span)
  return low + (phase if phase <= span else 2 * span - phase)


def body_box(actor: Actor, scene: Scene, t: float) -> tuple[float, float, float, float]:
  """The actor's body rectangle x1, y1, x2, y2 in pixels at time t (s from segment start)."""
  x = actor.x_start
  if WALK in actor.actions:
    x = _bounce(x + actor.direction * WALK_SPEED * (t - scene.start_s), *actor.lane)
  bottom = actor.bottom
  if JUMP in actor.actions:
    bottom -= JUMP_AMPLITUDE * math.sin(2 * math.pi * JUMP_HZ * t)
  return x, bottom - actor.person.height, x + actor.person.width, bottom


def _fill(image: np.ndarray, box, colour) -> None:
  x1, y1, x2, y2 = (int(round(v)) for v in box)
  image[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = colour


def render_frame(plan: VideoPlan, t: float) -> np.ndarray:
  """(HEIGHT, WIDTH, 3) uint8 frame at time t. Audio-only actions draw nothing."""
  image = plan.background.copy()
  scene = plan.scene_at(t)
  for actor in scene.actors:
    x1, y1, x2, y2 = body_box(actor, scene, t)
    _fill(image, (x1, y1, x2, y2), actor.person.colour)
    if WAVE in actor.actions and math.sin(2 * math.pi * WAVE_HZ * t) > 0:
      centre = (x1 + x2) / 2
      _fill(image, (centre - 3, y1 - HAND_SIZE - 2, centre + 3, y1 - 2), HAND_COLOUR)
    if CARRY in actor.actions:
      middle = (y1 + y2) / 2
      half = CARRY_SIZE / 2
      _fill(image, (x2 - half, middle - half, x2 + half, middle + half), CARRY_COLOUR)
  return image


def render_audio(plan: VideoPlan, seed: int) -> np.ndarray:
  """(1, samples) float32 16-kHz audio: quiet noise, plus the 660-Hz tone while someone sings."""
  samples = plan.duration_s * SAMPLE_RATE
  t = np.arange(samples) / SAMPLE_RATE
  audio = 0.01 * np.random.default_rng(seed).standard_normal(samples)
  for scene in plan.scenes:
    if any(SING in a.actions for a in scene.actors):
      span = slice(scene.start_s * SAMPLE_RATE, scene.end_s * SAMPLE_RATE)
      audio[span] += 0.3 * np.sin(2 * np.pi * SING_HZ * t[span])
  return audio[None].astype(np.float32)


def keyframe_range(duration_s: int) -> tuple[int, int]:
  """First and last keyframe timestamps of a segment: 902 .. 900 + duration - 2."""
  return (
    SEGMENT_START_S + FIRST_KEYFRAME_OFFSET_S,
    SEGMENT_START_S + duration_s - FIRST_KEYFRAME_OFFSET_S,
  )


def keyframe_boxes(plan: VideoPlan) -> list[tuple[int, int, tuple, frozenset]]:
  """(timestamp, person_id, normalised x1, y1, x2, y2, actions) of every actor at every keyframe."""
  first, last = keyframe_range(plan.duration_s)
  rows = []
  for timestamp in range(first, last + 1):
    t = float(timestamp - SEGMENT_START_S)
    scene = plan.scene_at(t)
    for actor in scene.actors:
      x1, y1, x2, y2 = body_box(actor, scene, t)
      box = (
        min(max(x1 / WIDTH, 0.0), 1.0),
        min(max(y1 / HEIGHT, 0.0), 1.0),
        min(max(x2 / WIDTH, 0.0), 1.0),
        min(max(y2 / HEIGHT, 0.0), 1.0),
      )
      rows.append((timestamp, actor.person.person_id, box, actor.actions))
  return rows


def _iou(a, b) -> float:
  ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def detector_boxes(truth: list, rng: np.random.Generator) -> list[tuple[int, tuple, float, int]]:
  """A simulated person detector: (timestamp, box, score, person id or -1 if false) rows.

  True boxes are jittered by N(0, 3% of their size) per edge with scores U(0.85, 1.0), 5% are
  missed, and 0-2 false positives per keyframe get scores U(0.3, 0.9).
  """
  rows = []
  by_time: dict[int, list] = {}
  for timestamp, person_id, box, _ in truth:
    by_time.setdefault(timestamp, []).append((person_id, box))
  for timestamp, actors in sorted(by_time.items()):
    for person_id, (x1, y1, x2, y2) in actors:
      if rng.random() < DETECTOR_MISS:
        continue
      w, h = x2 - x1, y2 - y1
      jitter = rng.normal(0.0, DETECTOR_JITTER, size=4) * np.array([w, h, w, h])
      box = np.clip(np.array([x1, y1, x2, y2]) + jitter, 0.0, 1.0)
      box = (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3]))
      score = float(rng.uniform(*TRUE_SCORE))
      rows.append((timestamp, tuple(float(v) for v in box), score, person_id))
    for _ in range(int(rng.integers(0, MAX_FALSE_POSITIVES + 1))):
      w, h = rng.uniform(0.1, 0.3), rng.uniform(0.2, 0.6)
      x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
      rows.append((timestamp, (x1, y1, x1 + w, y1 + h), float(rng.uniform(*FALSE_SCORE)), -1))
  return rows


def _fmt(box) -> list[str]:
  return [f'{v:.3f}' for v in box]


def _write_label_map(path: str) -> None:
  with open(path, 'w') as f:
    for class_id in EVALUATED_CLASS_IDS:
      f.write(f'item {{\n  name: "{CLASSES[class_id]}"\n  id: {class_id}\n}}\n')


def _write_media(root: str, plan: VideoPlan, seed: int, write_mp4: bool) -> int:
  folder = os.path.join(root, 'frames', plan.video_id)
  os.makedirs(folder, exist_ok=True)
  count = plan.duration_s * FPS
  frames = np.stack([render_frame(plan, i / FPS) for i in range(count)])
  for i, frame in enumerate(frames):
    path = os.path.join(folder, f'{plan.video_id}_{i + 1:06d}.jpg')
    Image.fromarray(frame).save(path, format='JPEG', quality=90)
  if write_mp4:
    os.makedirs(os.path.join(root, 'videos'), exist_ok=True)
    path = os.path.join(root, 'videos', f'{plan.video_id}.mp4')
    synthetic.write_video(path, frames, FPS, render_audio(plan, seed), SAMPLE_RATE)
  return count


def generate(
  root: str,
  seed: int = 0,
  videos: dict[str, int] | None = None,
  duration_s: int = DURATION_S,
  write_media: bool = True,
) -> dict:
  """Writes the dataset under `root`; returns its info (also written as `dataset_info.json`).

  Args:
    root: output folder.
    seed: everything is a function of it.
    videos: videos per split, {'train': 8, 'val': 3} by default.
    duration_s: seconds per video (keyframes 902 .. 900 + duration - 2).
    write_media: False writes only the annotation files (tests of the tables).
  """
  videos = dict(SPLITS if videos is None else videos)
  if set(videos) - {'train', 'val'}:
    raise ValueError(f'videos: expected splits train and val, got {sorted(videos)}')
  if duration_s < 2 * FIRST_KEYFRAME_OFFSET_S + 1:
    raise ValueError(f'duration_s: expected at least 5 s for one keyframe, got {duration_s}')
  for folder in ('annotations', 'frame_lists'):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
  _write_label_map(os.path.join(root, 'annotations', 'label_map.pbtxt'))
  info = {
    'name': 'synthetic_ava',
    'seed': seed,
    'height': HEIGHT,
    'width': WIDTH,
    'fps': FPS,
    'sample_rate': SAMPLE_RATE,
    'segment_start_s': SEGMENT_START_S,
    'keyframe_range': list(keyframe_range(duration_s)),
    'classes': {str(k): v for k, v in CLASSES.items()},
    'evaluated_class_ids': list(EVALUATED_CLASS_IDS),
    'videos': {},
  }
  video_index = 0
  for split_number, (split, count) in enumerate(sorted(videos.items())):
    gt_rows, det_rows, negative_rows, excluded, frame_rows = [], [], [], [], []
    proposals = {}
    info['videos'][split] = []
    for i in range(count):
      video_id = f'syn{split}{i:02d}'
      plan_seed = int(np.random.SeedSequence([seed, split_number, i]).generate_state(1)[0])
      plan = plan_video(video_id, plan_seed, duration_s)
      info['videos'][split].append(video_id)
      truth = keyframe_boxes(plan)
      for timestamp, person_id, box, actions in truth:
        for action in sorted(actions):
          gt_rows.append([video_id, f'{timestamp:04d}', *_fmt(box), action, person_id])
      detected = detector_boxes(truth, _rng(seed, split_number, i, 1))
      for timestamp, box, score, _ in detected:
        det_rows.append([video_id, f'{timestamp:04d}', *_fmt(box), '', f'{score:.4f}'])
        key = f'{video_id},{timestamp:04d}'
        proposals.setdefault(key, []).append([*box, score])
        matches = [
          (_iou(box, gt_box), pid, actions)
          for ts, pid, gt_box, actions in truth
          if ts == timestamp and _iou(box, gt_box) > TRAIN_MATCH_IOU
        ]
        if matches:
          _, pid, actions = max(matches, key=lambda m: m[0])
          for action in sorted(actions):
            negative_rows.append([video_id, f'{timestamp:04d}', *_fmt(box), action, pid])
        else:
          negative_rows.append([video_id, f'{timestamp:04d}', *_fmt(box), '', -1])
      if split == 'val':
        timestamps = sorted({ts for ts, *_ in truth})
        picks = _rng(seed, split_number, i, 2).choice(
          len(timestamps), EXCLUDED_PER_VAL_VIDEO, replace=False
        )
        excluded += [[video_id, f'{timestamps[p]:04d}'] for p in sorted(picks)]
      for f in range(duration_s * FPS):
        frame_rows.append(f'{video_id} {video_index} {f} {video_id}/{video_id}_{f + 1:06d}.jpg ""')
      video_index += 1
      if write_media:
        _write_media(root, plan, plan_seed, write_mp4=True)

    def write_csv(name, rows):
      with open(os.path.join(root, 'annotations', name), 'w', newline='') as f:
        csv.writer(f).writerows(rows)

    write_csv(f'synthetic_ava_{split}.csv', gt_rows)
    write_csv(f'synthetic_ava_{split}_predicted_boxes.csv', det_rows)
    if split == 'train':
      write_csv('synthetic_ava_train_predicted_boxes_include_negative.csv', gt_rows + negative_rows)
    else:
      write_csv('synthetic_ava_val_excluded_timestamps.csv', excluded)
    with open(os.path.join(root, 'annotations', f'synthetic_ava_{split}_proposals.pkl'), 'wb') as f:
      pickle.dump({k: np.array(v, np.float32) for k, v in proposals.items()}, f, protocol=4)
    with open(os.path.join(root, 'frame_lists', f'{split}.csv'), 'w') as f:
      f.write('original_video_id video_id frame_id path labels\n')
      f.write('\n'.join(frame_rows) + '\n')
  with open(os.path.join(root, 'dataset_info.json'), 'w') as f:
    json.dump(info, f, indent=2, sort_keys=True)
  return info


def main(argv):
  del argv
  from absl import flags

  info = generate(flags.FLAGS.output, seed=flags.FLAGS.seed, write_media=flags.FLAGS.media)
  print(json.dumps({k: info[k] for k in ('keyframe_range', 'videos')}, sort_keys=True))


if __name__ == '__main__':
  from absl import app, flags

  flags.DEFINE_string('output', None, 'Folder to write the dataset into.')
  flags.DEFINE_integer('seed', 0, 'Seed of everything in the dataset.')
  flags.DEFINE_bool('media', True, 'Write frames and mp4s (False: annotation files only).')
  flags.mark_flags_as_required(['output'])
  app.run(main)
