"""The `synthetic_av_sync` dataset: mp4 files where sound and motion are tied (spec 5.2).

`synthetic_av` cannot teach the self-supervised pretexts: its tone is unrelated to anything in
the picture (AVS has nothing to learn) and its background is isotropic (a rotation by 180 degrees
looks like a mirrored motion). Here:

- **Events tie the modalities.** A coloured square bounces on the ground. At each event time
  e_k it touches the ground, reverses its vertical direction, turns white for `FLASH_FRAMES`
  frames, and a 30 ms tone burst starts. Events follow a renewal process of rate r (the `rate`
  attribute, 1.5 / 3 / 6 Hz) with a dead time of `MIN_GAP_S`: the gaps are MIN_GAP_S plus a
  gamma variable of mean 1/r and shape `GAP_SHAPE`, so the events come at 1 / (MIN_GAP_S + 1/r)
  per second on average. Generator 2 (spec 5.4's one calibration): the shape was 1 (an
  exponential, a dead-time Poisson process), whose event counts leave the rate attribute at
  most 63-67% readable from a clip; shape 8 keeps the mean rates and makes the rhythm regular
  enough to read (see docs/self_supervised.md).
  A time-shifted copy of the audio clicks at the wrong frames (hard negatives are learnable) and
  another clip's audio clicks at another rhythm (easy negatives are learnable).
- **A single frame shows which way is up**: a dark ground band (the bottom `GROUND_ROWS` rows)
  and a sky whose brightness falls towards the ground, so every 90-degree rotation is visible.
- **Labels, for the probe only**: colour (4) x rate (3) = 12 classes; the burst pitch is random
  per clip and is not a label.

Frame rates (24/25/30 fps), sample rates and channel counts vary per clip as in `synthetic.py`,
whose `write_video` encodes H.264 + AAC. The layout is Kinetics' (`<split>.csv` and
`<split>/<label>/<id>_<s>_<e>.mp4`) with the three splits of spec 5.2. Deterministic in the
seed; no TensorFlow (generation runs in worker processes).
"""

import csv
import dataclasses
import os

import numpy as np

from avsf_jax.input.prepare import synthetic

COLOURS = {
  'red': (220, 40, 40),
  'green': (40, 190, 60),
  'blue': (25, 45, 255),
  'yellow': (225, 205, 30),
}
RATES = {'slow': 1.5, 'medium': 3.0, 'fast': 6.0}  # Hz: 1 / mean of a gap's random part
CLASS_NAMES = tuple(f'{c}_{r}' for c in COLOURS for r in RATES)
SPLITS = {'pretrain': 40, 'train': 20, 'test': 10}  # clips per class
WIDTH, HEIGHT, DURATION_S = synthetic.WIDTH, synthetic.HEIGHT, synthetic.DURATION_S
GROUND_ROWS = 10
SQUARE_SIDES = (24, 32)  # pixels at 112 x 80, inclusive (one drawn per clip)
FLASH_FRAMES = 5  # >= one Fast frame stride (4 frames at 30 fps in the demo)
# Spec 5.2 says 0.2 s; at 24 and 25 fps that lets two 5-frame flashes touch and read as one.
# 0.25 s = 6 frames at 24 fps leaves at least one unflashed frame between events at every rate.
MIN_GAP_S = 0.25
# Generator 2: gaps = MIN_GAP_S + Gamma(shape GAP_SHAPE, mean 1 / r); generator 1 had shape 1.
GENERATOR_VERSION = 2
GAP_SHAPE = 8.0
BURST_S = 0.03
NOISE_DBFS = -45.0
BURST_AMPLITUDE = 0.5
PITCH_RANGE_HZ = (500.0, 2000.0)
GROUND_COLOUR = (35, 28, 22)
SKY_TOP, SKY_BOTTOM = (185, 205, 250), (70, 95, 150)  # brightness falls towards the ground
WHITE = (255, 255, 255)
_FRAME_RATES = (24, 25, 30)
_SAMPLE_RATES = (22050, 44100, 48000)
# Motion uses events this far outside the clip too, so the first and last arcs are whole.
_MARGIN_S = 1.5
# An arc of this many seconds or more reaches the top of the sky; shorter ones stay lower.
_FULL_ARC_S = 0.6


@dataclasses.dataclass(frozen=True)
class SyncClip:
  """One generated clip and the ground truth of its design."""

  frames: np.ndarray  # (N, HEIGHT, WIDTH, 3) uint8
  fps: int
  audio: np.ndarray  # (channels, samples) float32
  sample_rate: int
  events: np.ndarray  # event (bounce = flash onset = burst onset) times in [0, DURATION_S)
  rate: float  # Hz of the event process (before the dead time)
  pitch: float  # Hz of the bursts (random, not a label)


def class_attributes(class_name: str) -> tuple[str, str]:
  """(colour, rate name) of a class, e.g. 'red_fast' -> ('red', 'fast')."""
  colour, rate = class_name.split('_')
  if colour not in COLOURS or rate not in RATES:
    raise ValueError(f'synthetic_av_sync: unknown class {class_name!r}; one of {CLASS_NAMES}')
  return colour, rate


def rate_label(label: int) -> int:
  """The rate attribute (0 slow, 1 medium, 2 fast) of a 12-way label (colour-major order)."""
  return int(label) % len(RATES)


def colour_label(label: int) -> int:
  """The colour attribute (0..3) of a 12-way label."""
  return int(label) // len(RATES)


def expected_event_rate(rate: float, min_gap: float = MIN_GAP_S) -> float:
  """Mean events per second of a renewal process of `rate` with dead time `min_gap`."""
  return 1.0 / (min_gap + 1.0 / rate)


def event_times(
  rng: np.random.Generator,
  rate: float,
  start: float,
  end: float,
  min_gap: float = MIN_GAP_S,
  shape: float = GAP_SHAPE,
) -> np.ndarray:
  """Event times in [start, end): gaps are `min_gap` + Gamma(`shape`, mean 1 / rate) (shape 1:
  a dead-time Poisson process; larger shapes: a more regular rhythm of the same mean)."""
  times, t = [], start
  while True:
    t += min_gap + rng.gamma(shape, 1.0 / (rate * shape))
    if t >= end:
      return np.asarray(times, np.float64)
    times.append(t)


def _background() -> np.ndarray:
  """Sky gradient over a dark ground band, (HEIGHT, WIDTH, 3) uint8."""
  sky_rows = HEIGHT - GROUND_ROWS
  weight = np.linspace(0.0, 1.0, sky_rows)[:, None]
  sky = (1 - weight) * np.asarray(SKY_TOP, np.float64) + weight * np.asarray(SKY_BOTTOM)
  column = np.concatenate([sky, np.tile(np.asarray(GROUND_COLOUR, np.float64), (GROUND_ROWS, 1))])
  return np.repeat(np.round(column).astype(np.uint8)[:, None, :], WIDTH, axis=1)


def _heights(times: np.ndarray, bounces: np.ndarray, ceiling: float) -> np.ndarray:
  """Height above the ground at `times`: a parabolic arc between consecutive bounces."""
  index = np.searchsorted(bounces, times, side='right') - 1
  left, right = bounces[index], bounces[index + 1]
  gap = right - left
  peak = ceiling * np.minimum(1.0, gap / _FULL_ARC_S)
  return 4.0 * peak * (times - left) * (right - times) / np.square(gap)


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Every random choice of a clip but the noise."""

  fps: int
  sample_rate: int
  channels: int
  side: int
  pitch: float
  x0: float
  drift: float
  rate: float
  bounces: np.ndarray  # every bounce, including virtual ones outside the clip
  events: np.ndarray  # the bounces that flash and click


def _plan(class_name: str, seed: int) -> tuple[_Plan, np.random.Generator]:
  """The clip's plan and the generator, positioned for the noise draw."""
  _, rate_name = class_attributes(class_name)
  rate = RATES[rate_name]
  rng = np.random.default_rng(seed)
  fps = int(rng.choice(_FRAME_RATES))
  sample_rate = int(rng.choice(_SAMPLE_RATES))
  channels = int(rng.integers(1, 3))
  side = int(rng.integers(SQUARE_SIDES[0], SQUARE_SIDES[1] + 1))
  pitch = float(rng.uniform(*PITCH_RANGE_HZ))
  x0 = float(rng.uniform(0, WIDTH - side))
  drift = float(rng.uniform(-12.0, 12.0))  # pixels per second, horizontal
  inner = event_times(rng, rate, -_MARGIN_S, DURATION_S + _MARGIN_S)
  bounces = np.concatenate([[-_MARGIN_S], inner, [DURATION_S + _MARGIN_S]])
  events = inner[(inner >= 0.0) & (inner < DURATION_S - BURST_S)]
  plan = _Plan(fps, sample_rate, channels, side, pitch, x0, drift, rate, bounces, events)
  return plan, rng


def clip_events(class_name: str, seed: int) -> np.ndarray:
  """The event times of a clip, without rendering it (equal to `clip_media(...).events`)."""
  return _plan(class_name, seed)[0].events


def clip_media(class_name: str, seed: int) -> SyncClip:
  """The frames, audio and ground truth of one clip (a pure function of its arguments)."""
  colour, _ = class_attributes(class_name)
  plan, rng = _plan(class_name, seed)
  fps, sample_rate, side, events = plan.fps, plan.sample_rate, plan.side, plan.events
  bounces, x0, drift, pitch = plan.bounces, plan.x0, plan.drift, plan.pitch

  num_frames = int(round(DURATION_S * fps))
  frame_times = np.arange(num_frames) / fps
  ground = HEIGHT - GROUND_ROWS  # first ground row; the square rests on it
  heights = _heights(frame_times, bounces, ceiling=ground - side - 2)
  # Frame i is white when an event happened in (t_i - FLASH_FRAMES / fps, t_i].
  onset = np.ceil(events * fps - 1e-9).astype(int)
  white = np.zeros(num_frames, bool)
  for first in onset:
    white[first : first + FLASH_FRAMES] = True
  background = _background()
  frames = np.empty((num_frames, HEIGHT, WIDTH, 3), np.uint8)
  span = WIDTH - side
  for i in range(num_frames):
    frame = background.copy()
    top = int(round(ground - side - heights[i]))
    position = (x0 + drift * frame_times[i]) % (2 * span)  # reflect at the side walls
    left = int(round(position if position <= span else 2 * span - position))
    frame[top : top + side, left : left + side] = WHITE if white[i] else COLOURS[colour]
    frames[i] = frame

  num_samples = int(round(DURATION_S * sample_rate))
  noise_rms = 10.0 ** (NOISE_DBFS / 20.0)
  audio = noise_rms * rng.standard_normal((plan.channels, num_samples))
  burst_len = int(round(BURST_S * sample_rate))
  t = np.arange(burst_len) / sample_rate
  # A fast attack and a smooth decay: the onset is sharp at e_k, the burst has no click at its end.
  envelope = np.minimum(1.0, t / 0.002) * np.cos(0.5 * np.pi * t / BURST_S) ** 2
  burst = BURST_AMPLITUDE * envelope * np.sin(2 * np.pi * pitch * t)
  for e in events:
    begin = int(round(e * sample_rate))
    n = min(burst_len, num_samples - begin)
    audio[:, begin : begin + n] += burst[:n]
  return SyncClip(
    frames=frames,
    fps=fps,
    audio=audio.astype(np.float32),
    sample_rate=sample_rate,
    events=events,
    rate=plan.rate,
    pitch=pitch,
  )


def _clip_job(args: tuple[str, str, int]) -> None:
  path, class_name, seed = args
  clip = clip_media(class_name, seed)
  synthetic.write_video(path, clip.frames, clip.fps, clip.audio, clip.sample_rate)


def clip_seed(seed: int, split_number: int, class_number: int, index: int) -> int:
  return int(np.random.SeedSequence([seed, split_number, class_number, index]).generate_state(1)[0])


def generate(
  manual_dir: str, seed: int = 0, executor=None, clips_per_class: dict | None = None
) -> int:
  """Writes `<split>.csv` and the mp4s of every split under `manual_dir`; returns the count.

  Deterministic in `seed`: a clip is a function of (seed, split, class, index). `executor` (a
  `concurrent.futures.Executor`) spreads the encoding over processes; `clips_per_class` maps
  split names to clips per class and defaults to `SPLITS`.
  """
  jobs = []
  end = int(np.ceil(DURATION_S))
  for split_number, (split, per_class) in enumerate((clips_per_class or SPLITS).items()):
    rows = []
    for class_number, name in enumerate(CLASS_NAMES):
      folder = os.path.join(manual_dir, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(per_class):
        video_id = f'avsync{split_number}{class_number:02d}{i:03d}'
        path = os.path.join(folder, f'{video_id}_{0:06d}_{end:06d}.mp4')
        rows.append((name, video_id, 0, end, split))
        jobs.append((path, name, clip_seed(seed, split_number, class_number, i)))
    with open(os.path.join(manual_dir, f'{split}.csv'), 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(('label', 'youtube_id', 'time_start', 'time_end', 'split'))
      writer.writerows(rows)
  if executor is None:
    for job in jobs:
      _clip_job(job)
  else:
    list(executor.map(_clip_job, jobs, chunksize=8))
  return len(jobs)
