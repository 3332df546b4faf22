"""The `synthetic_untrimmed` dataset of the Listen to Look demo (spec §8.1): long videos, one
short audible action, silent decoys.

Classes are 4 colours x 2 motions = 8. A "bounce" oscillates vertically at 3 Hz (from a uniform
phase) and clicks (a 20-ms 1.5-kHz burst) at every floor contact; a "drift" moves right at
40 px/s, at the height of a bounce at a uniform phase, and hums at 300 Hz. One frame shows the
colour but not the motion (the object's position has the same distribution under both motions),
the audio the motion but not the colour.

An untrimmed video (default 40 s, 8 fps, 48x48 RGB, 16 kHz mono) holds one 6-s action segment
at a uniform random position: the class object moving and sounding at -12 dBFS. Elsewhere there
is low noise (-45 dBFS) and, half of the background time, a silent static decoy square of another
colour, so per-frame predictions in the background mislead. Pairs are taken every 0.5 s
(N = 80): the frame at the time stamp and the 1 s of audio from it.

Everything is a function of (seed, split, class, index) and numpy only; `generate` writes the
files as H.264 + AAC with `synthetic.write_video` plus a CSV per split (label, video id,
segment start/end in seconds), and the trimmed 2-s action clips for the teacher and the
distillation, laid out like Kinetics.
"""

import csv
import dataclasses
import os

import numpy as np

from avsf_jax.input.prepare import synthetic

COLOURS = {
  'red': (220, 40, 40),
  'green': (40, 200, 60),
  'blue': (50, 80, 230),
  'yellow': (230, 210, 40),
}
MOTIONS = ('bounce', 'drift')
CLASS_NAMES = tuple(f'{c}_{m}' for c in COLOURS for m in MOTIONS)
SIZE, FPS, SAMPLE_RATE = 48, 8, 16000
# The action segment: 6 s = 12 pairs = 15 % of the video. Spec §8.1 has 3 s (6 pairs, 7.5 %);
# changed once (spec §8.3), because 3 s made two targets impossible by design: with 10 picks and
# no repeats at most 6 can fall inside (Ours peaked at t' = 5, 91 %, then fell to 77.5 % at
# t' = 10), and sparse indexing at s = 5 (a sample every 2.5 s) kept one or two samples of it
# (s = 5: 61 % vs 77.5 % at s = 1). docs/listen_to_look.md has the figures.
DURATION_S, SEGMENT_S, PAIR_HOP_S, PAIR_AUDIO_S = 40.0, 6.0, 0.5, 1.0
CLIP_S = 2.0  # trimmed clips: 16 frames at 8 fps
ACTION_DBFS, NOISE_DBFS = -12.0, -45.0
BOUNCE_HZ, CLICK_HZ, CLICK_S, HUM_HZ, DRIFT_PX_S = 3.0, 1500.0, 0.02, 300.0, 40.0
OBJECT_SIDE = 10
DECOY_CHUNK_S, DECOY_RATE = 2.0, 0.5
BACKGROUND = 70
SPLITS = {'train': 40, 'val': 10}  # untrimmed videos per class
CLIPS_PER_CLASS = 60


def dbfs(level: float) -> float:
  """The peak amplitude of a full-scale-relative level (0 dBFS = 1.0)."""
  return float(10.0 ** (level / 20.0))


@dataclasses.dataclass(frozen=True)
class Video:
  """One untrimmed video and its ground truth."""

  frames: np.ndarray  # (T, SIZE, SIZE, 3) uint8
  audio: np.ndarray  # (samples,) float32 mono
  label: int
  segment_start_s: float
  segment_end_s: float
  decoy_frames: np.ndarray  # (T,) bool: a decoy is visible in that frame


def pair_times(duration_s: float = DURATION_S, hop_s: float = PAIR_HOP_S) -> np.ndarray:
  """The pairs' time stamps 0, hop, 2·hop, ... < duration (N = 80 by default)."""
  return np.arange(int(round(duration_s / hop_s))) * hop_s


def segment_pairs(start_s: float, end_s: float, times: np.ndarray) -> tuple[int, int]:
  """[first, last + 1) of the pairs whose time stamp lies in [start_s, end_s)."""
  inside = np.flatnonzero((times >= start_s) & (times < end_s))
  return int(inside[0]), int(inside[-1]) + 1


def pair_media(v: Video, hop_s: float = PAIR_HOP_S) -> tuple[np.ndarray, np.ndarray]:
  """The image-audio pairs of a video: the frame at each time stamp and the PAIR_AUDIO_S of
  audio from it (zero-padded past the end), (N, SIZE, SIZE, 3) and (N, samples).

  The audio slices are what the student's 101 x 40 log-mel reads (16 kHz, 10-ms hop).
  """
  duration_s = len(v.frames) / FPS
  times = pair_times(duration_s, hop_s)
  frames = v.frames[np.round(times * FPS).astype(np.int64)]
  width = int(round(PAIR_AUDIO_S * SAMPLE_RATE))
  padded = np.concatenate([v.audio, np.zeros(width, np.float32)])
  starts = np.round(times * SAMPLE_RATE).astype(np.int64)
  audio = np.stack([padded[s : s + width] for s in starts])
  return frames, audio


def _height(phase: np.ndarray) -> np.ndarray:
  """The top row of a bouncing object at oscillation phase `phase` (contacts at phase = k)."""
  room = SIZE - OBJECT_SIDE
  return room - 0.8 * room * np.abs(np.sin(np.pi * phase))


def _object_track(motion: str, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
  """(len(t), 2) top-left (y, x) of the moving object at times `t` (seconds from its start),
  and the bounce's phase at t = 0 (in periods; 0 for a drift).

  One frame must not tell the motion (spec §8.1: image-only is capped at 50 %), so a frame's
  position has the same distribution under both motions: a bounce starts at a uniform phase of
  its oscillation, and a drift runs at the height of a bounce at a uniform phase; x is uniform
  for both. (A bounce that always started on the floor let the first frame give the motion
  away: 85 % image-only clip accuracy; the generator was changed once for that, spec §8.3.)
  """
  room = SIZE - OBJECT_SIDE
  if motion == 'bounce':
    phase = float(rng.uniform(0.0, 1.0))
    x = np.full(t.shape, rng.uniform(0, room))
    y = _height(phase + BOUNCE_HZ * t)
  else:
    phase = 0.0
    y = np.full(t.shape, _height(rng.uniform(0.0, 1.0)))
    x = (rng.uniform(0, room) + DRIFT_PX_S * t) % room
  return np.stack([y, x], axis=-1), phase


def _action_sound(motion: str, num_samples: int, phase: float = 0.0) -> np.ndarray:
  """Clicks at every floor contact (bounce) or a 300-Hz hum (drift), peak at ACTION_DBFS.

  `phase` is the bounce's phase at the first sample, in periods (contacts at phase = k)."""
  t = np.arange(num_samples) / SAMPLE_RATE
  if motion == 'drift':
    return dbfs(ACTION_DBFS) * np.sin(2 * np.pi * HUM_HZ * t)
  # Contacts when |sin(π·(phase + f·t))| = 0, i.e. at (k - phase) / f seconds.
  since_contact = np.mod(t + phase / BOUNCE_HZ, 1.0 / BOUNCE_HZ)
  burst = since_contact < CLICK_S
  return dbfs(ACTION_DBFS) * burst * np.sin(2 * np.pi * CLICK_HZ * since_contact)


def _draw(frame: np.ndarray, y: float, x: float, colour) -> None:
  y, x = int(round(y)), int(round(x))
  frame[y : y + OBJECT_SIDE, x : x + OBJECT_SIDE] = colour


def _action(class_name: str, num_frames: int, num_samples: int, rng: np.random.Generator):
  """The class object's frames-to-draw (positions) and its sound for a segment."""
  colour, motion = class_name.split('_')
  track, phase = _object_track(motion, np.arange(num_frames) / FPS, rng)
  return COLOURS[colour], track, _action_sound(motion, num_samples, phase)


def video(class_name: str, seed: int, duration_s: float = DURATION_S) -> Video:
  """One untrimmed video of `class_name`, deterministic in `seed`.

  The background (noise, segment position, decoy times and places) depends on `seed` only;
  the decoys' colours avoid the class colour; the class shows only inside the segment.
  """
  if class_name not in CLASS_NAMES:
    raise ValueError(f'class_name={class_name!r}; expected one of {CLASS_NAMES}')
  colour_name = class_name.split('_')[0]
  background_rng = np.random.default_rng([seed, 0])
  num_frames = int(round(duration_s * FPS))
  num_samples = int(round(duration_s * SAMPLE_RATE))
  start_s = float(background_rng.uniform(0.0, duration_s - SEGMENT_S))
  start_f = int(np.ceil(start_s * FPS))
  end_f = min(int(np.ceil((start_s + SEGMENT_S) * FPS)), num_frames)
  start_a = int(round(start_s * SAMPLE_RATE))
  end_a = int(round((start_s + SEGMENT_S) * SAMPLE_RATE))

  frames = np.full((num_frames, SIZE, SIZE, 3), BACKGROUND, np.uint8)
  noise_rms = dbfs(NOISE_DBFS)
  audio = noise_rms * background_rng.standard_normal(num_samples)

  # Decoys: per DECOY_CHUNK_S chunk of background, with probability DECOY_RATE, a static square.
  decoy = np.zeros(num_frames, bool)
  chunk = int(round(DECOY_CHUNK_S * FPS))
  others = [c for c in COLOURS if c != colour_name]
  for begin in range(0, num_frames, chunk):
    present = background_rng.uniform() < DECOY_RATE
    y, x = background_rng.uniform(0, SIZE - OBJECT_SIDE, size=2)
    which = int(background_rng.integers(0, 3))
    if not present:
      continue
    for f in range(begin, min(begin + chunk, num_frames)):
      if start_f <= f < end_f:
        continue
      decoy[f] = True
      _draw(frames[f], y, x, COLOURS[others[which]])

  action_rng = np.random.default_rng([seed, 1])
  colour, track, sound = _action(class_name, end_f - start_f, end_a - start_a, action_rng)
  for i, f in enumerate(range(start_f, end_f)):
    _draw(frames[f], *track[i], colour)
  audio[start_a:end_a] += sound
  return Video(
    frames=frames,
    audio=audio.astype(np.float32),
    label=CLASS_NAMES.index(class_name),
    segment_start_s=start_s,
    segment_end_s=start_s + SEGMENT_S,
    decoy_frames=decoy,
  )


def trimmed_clip(class_name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A 2-s action clip (16 frames, 32,000 samples) of `class_name`: the teacher's input."""
  rng = np.random.default_rng([seed, 2])
  num_frames, num_samples = int(CLIP_S * FPS), int(CLIP_S * SAMPLE_RATE)
  colour, track, sound = _action(class_name, num_frames, num_samples, rng)
  frames = np.full((num_frames, SIZE, SIZE, 3), BACKGROUND, np.uint8)
  for i in range(num_frames):
    _draw(frames[i], *track[i], colour)
  audio = dbfs(NOISE_DBFS) * rng.standard_normal(num_samples) + sound
  return frames, audio.astype(np.float32)


def _seed(seed: int, *parts: int) -> int:
  return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def video_list(split: str, per_class: int, seed: int = 0) -> list[tuple[str, int]]:
  """(class name, `video` seed) of a split's untrimmed videos, class-major, as `generate`
  makes them with the default splits (train is split 0, val split 1)."""
  if split not in SPLITS:
    raise ValueError(f'video_list: split={split!r}; expected one of {tuple(SPLITS)}')
  number = tuple(SPLITS).index(split)
  return [
    (name, _seed(seed, number, c, i))
    for c, name in enumerate(CLASS_NAMES)
    for i in range(per_class)
  ]


def _write(path: str, frames: np.ndarray, audio: np.ndarray) -> None:
  synthetic.write_video(path, frames, FPS, audio[None], SAMPLE_RATE)


def generate(
  manual_dir: str,
  seed: int = 0,
  videos_per_class: dict[str, int] | None = None,
  clips_per_class: int = CLIPS_PER_CLASS,
  duration_s: float = DURATION_S,
) -> dict[str, int]:
  """Writes the untrimmed videos and trimmed clips under `manual_dir`; returns their counts.

  Layout: `<split>/<class>/<id>.mp4` with `<split>.csv` rows (label, video_id, segment_start,
  segment_end, duration, split), and `clips/<class>/<id>.mp4` with `clips.csv`.
  """
  counts = {}
  for split_number, (split, per_class) in enumerate((videos_per_class or SPLITS).items()):
    rows = []
    for class_number, name in enumerate(CLASS_NAMES):
      folder = os.path.join(manual_dir, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(per_class):
        sample = video(name, _seed(seed, split_number, class_number, i), duration_s)
        video_id = f'unt{split_number}{class_number}{i:03d}'
        _write(os.path.join(folder, f'{video_id}.mp4'), sample.frames, sample.audio)
        rows.append(
          (name, video_id, f'{sample.segment_start_s:.4f}', f'{sample.segment_end_s:.4f}')
          + (f'{duration_s:.1f}', split)
        )
    with open(os.path.join(manual_dir, f'{split}.csv'), 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(('label', 'video_id', 'segment_start', 'segment_end', 'duration', 'split'))
      writer.writerows(rows)
    counts[split] = len(rows)
  rows = []
  for class_number, name in enumerate(CLASS_NAMES):
    folder = os.path.join(manual_dir, 'clips', name)
    os.makedirs(folder, exist_ok=True)
    for i in range(clips_per_class):
      frames, audio = trimmed_clip(name, _seed(seed, 99, class_number, i))
      clip_id = f'clip{class_number}{i:03d}'
      _write(os.path.join(folder, f'{clip_id}.mp4'), frames, audio)
      rows.append((name, clip_id))
  with open(os.path.join(manual_dir, 'clips.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(('label', 'clip_id'))
    writer.writerows(rows)
  counts['clips'] = len(rows)
  return counts
