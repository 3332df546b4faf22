"""The embedded `synthetic_av` dataset: deterministic mp4 files laid out like Kinetics.

Each class is a (colour, motion direction, sound pitch) triple, 3 x 2 x 2 = 12 classes. A
bright coloured square with a white border drifts left or right over a dark, noisy background
that pans the same way at half its speed (a camera following it), while a tone plays: pairs of
classes differ only in sound (a visual-only model can reach at most 50%), only in motion
direction (a single frame cannot tell them apart, so a model without temporal modelling is capped
at 50% too), or only in appearance. Start positions, speeds, frame rates (24/25/30 fps), audio
sample rates (22.05/44.1/48 kHz) and channel counts (1/2) vary per clip. The files are written
as H.264 + AAC and then prepared exactly like Kinetics (CSV + `<split>/<label>/<id>_<s>_<e>.mp4`).
No TensorFlow here: generation runs in worker processes.
"""

import csv
import fractions
import os

import av
import numpy as np

# Generator 2 (dataset 1.2.0): bright squares (every colour above the background in all three
# channels), 20-28 pixels, each with the same white border, on a dark background that pans with
# them. Generator 1 (small squares on a static mid-grey background) left the demo on a knife's
# edge: in about one run in five the network learnt one colour's motion direction late (its
# motion-sensitive channels did not respond to that colour) and ended at 81.7-98.3% top-1. The
# white border is a motion cue that every colour shares (docs/training.md#the-embedded-demo).
COLOURS = {'red': (235, 60, 60), 'green': (60, 220, 60), 'blue': (70, 100, 245)}
BACKGROUND = (16, 56)  # range of the background's 8x8 blocks
OUTLINE, OUTLINE_PX = (235, 235, 235), 3  # the same white border on every square
DIRECTIONS = {'left': -1.0, 'right': 1.0}
PITCHES = {'low': 330.0, 'high': 1320.0}
CLASS_NAMES = tuple(f'{c}_{d}_{p}' for c in COLOURS for d in DIRECTIONS for p in PITCHES)
SPLITS = {'train': 20, 'validate': 5}  # clips per class
# Bumped with every change to the clips (the prepared dataset's version follows it).
GENERATOR_VERSION = 2
WIDTH, HEIGHT, DURATION_S = 112, 80, 2.5
_FRAME_RATES = (24, 25, 30)
_SAMPLE_RATES = (22050, 44100, 48000)


def rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
  """uint8 RGB (H, W, 3), H and W even -> the planar yuv420p array PyAV takes ((H * 3 / 2, W):
  Y, then U and V), BT.601 limited range with 2 x 2 averaged chroma, as ffmpeg converts.

  Done here because ffmpeg's own conversion (swscale, used when an RGB frame is encoded) gave
  other pixels on some calls of one process; with this and one x264 thread (and one
  lookahead thread: `write_video`), one clip encoded again in a process gives the same bytes
  (tested)."""
  height, width = image.shape[:2]
  if height % 2 or width % 2:
    raise ValueError(f'yuv420p needs an even frame size, got {width}x{height}')
  r, g, b = np.moveaxis(image.astype(np.float64), -1, 0)
  y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
  u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
  v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255

  def half(c):
    return c.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).reshape(-1, width)

  planes = np.concatenate([y, half(u), half(v)], axis=0)
  return np.clip(np.round(planes), 0, 255).astype(np.uint8)


def write_video(
  path: str,
  frames: np.ndarray,
  fps: int,
  audio: np.ndarray | None = None,
  sample_rate: int = 44100,
  *,
  video_start_s: float = 0.0,
  audio_start_s: float = 0.0,
  rotation: int = 0,
  gop: int | None = None,
  faststart: bool = False,
) -> None:
  """Writes uint8 frames (N, H, W, 3) and float audio (channels, samples) as H.264 + AAC.

  `video_start_s` / `audio_start_s` give the streams non-zero start times; `rotation` writes
  a display-matrix rotation (degrees counter-clockwise) as phones do.
  """
  options = {'movflags': '+faststart'} if faststart else {}
  with av.open(str(path), 'w', options=options) as container:
    vstream = container.add_stream('libx264', rate=fps)
    vstream.width, vstream.height = frames.shape[2], frames.shape[1]
    vstream.pix_fmt = 'yuv420p'
    # One x264 thread and one lookahead thread, asked of x264 itself (the codec context's
    # thread_count = 1 alone left repeated encodes of a clip different in some processes), and
    # x264's C code instead of its assembly (`no-asm`): the assembly reads memory nobody wrote,
    # so a clip's bytes depended on the heap's leftovers, i.e. on what the process had run
    # before (a build's pooled workers and two serial builds wrote different files; with
    # glibc's MALLOC_PERTURB_ at 0 and 170, 5 of 6 clips differed). Encoding is about 1.8x
    # slower; every clip now has one set of bytes (tests/input/test_builders.py, docs/data.md).
    vstream.options = {
      'preset': 'veryfast',
      'x264-params': 'threads=1:lookahead-threads=1:no-asm=1',
      **({'g': str(gop)} if gop else {}),
    }
    vstream.codec_context.thread_count = 1
    if rotation:
      vstream.set_display_rotation(rotation)
    astream = None
    if audio is not None:
      layout = {1: 'mono', 2: 'stereo', 6: '5.1'}[audio.shape[0]]
      astream = container.add_stream('aac', rate=sample_rate, layout=layout)
    offset = int(round(video_start_s * fps))
    for i, image in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(image), format='yuv420p')
      frame.pts = i + offset
      frame.time_base = fractions.Fraction(1, fps)
      for packet in vstream.encode(frame):
        container.mux(packet)
    for packet in vstream.encode():
      container.mux(packet)
    if astream is not None:
      chunk = 1024
      a_offset = int(round(audio_start_s * sample_rate))
      planar = np.ascontiguousarray(audio.astype(np.float32))
      for begin in range(0, planar.shape[1], chunk):
        piece = np.ascontiguousarray(planar[:, begin : begin + chunk])
        frame = av.AudioFrame.from_ndarray(piece, format='fltp', layout=astream.layout.name)
        frame.sample_rate = sample_rate
        frame.pts = a_offset + begin
        frame.time_base = fractions.Fraction(1, sample_rate)
        for packet in astream.encode(frame):
          container.mux(packet)
      for packet in astream.encode():
        container.mux(packet)


def clip_media(class_name: str, seed: int) -> tuple[np.ndarray, int, np.ndarray, int]:
  """The frames, fps, audio (channels, samples) and sample rate of one synthetic clip."""
  colour, direction, pitch = class_name.split('_')
  rng = np.random.default_rng(seed)
  fps = int(rng.choice(_FRAME_RATES))
  sample_rate = int(rng.choice(_SAMPLE_RATES))
  channels = int(rng.integers(1, 3))
  num_frames = int(round(DURATION_S * fps))
  side = int(rng.integers(20, 29))  # 20-28 pixels
  speed = float(rng.uniform(30.0, 50.0)) * DIRECTIONS[direction]  # pixels per second
  x0, y0 = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT - side)
  background = rng.integers(*BACKGROUND, size=(HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
  background = np.kron(background, np.ones((8, 8, 1), np.uint8))
  frames = np.empty((num_frames, HEIGHT, WIDTH, 3), np.uint8)
  columns = np.arange(WIDTH)
  for i in range(num_frames):
    frame = np.roll(background, int(round(0.5 * speed * i / fps)), axis=1)  # the pan
    left = (x0 + speed * i / fps) % WIDTH
    offset = (columns - left) % WIDTH
    top = int(y0)
    frame[top : top + side, offset < side] = OUTLINE
    inner = (offset >= OUTLINE_PX) & (offset < side - OUTLINE_PX)
    frame[top + OUTLINE_PX : top + side - OUTLINE_PX, inner] = COLOURS[colour]
    frames[i] = frame
  t = np.arange(int(round(DURATION_S * sample_rate))) / sample_rate
  envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2.0, 5.0) * t + rng.uniform(0, 6.3))
  tone = 0.3 * envelope * np.sin(2 * np.pi * PITCHES[pitch] * rng.uniform(0.95, 1.05) * t)
  noise = 0.02 * rng.standard_normal((channels, t.size))
  audio = (tone[None] + noise).astype(np.float32)
  return frames, fps, audio, sample_rate


def _clip_job(args: tuple[str, str, int]) -> None:
  path, class_name, seed = args
  frames, fps, audio, sample_rate = clip_media(class_name, seed)
  write_video(path, frames, fps, audio, sample_rate)


def generate(
  manual_dir: str, seed: int = 0, executor=None, clips_per_class: dict | None = None
) -> int:
  """Writes the raw dataset (CSVs + mp4s) under `manual_dir`; returns the number of clips.

  Deterministic in `seed`: every clip's content is a function of (seed, split, class, index).
  `executor` (a `concurrent.futures.Executor`) spreads the encoding over processes;
  `clips_per_class` ({'train': n, 'validate': m}) defaults to `SPLITS`.
  """
  jobs = []
  end = int(np.ceil(DURATION_S))
  for split_number, (split, per_class) in enumerate((clips_per_class or SPLITS).items()):
    rows = []
    for class_number, name in enumerate(CLASS_NAMES):
      folder = os.path.join(manual_dir, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(per_class):
        clip_seed = int(
          np.random.SeedSequence([seed, split_number, class_number, i]).generate_state(1)[0]
        )
        youtube_id = f'syn{split_number}{class_number:02d}{i:03d}'
        path = os.path.join(folder, f'{youtube_id}_{0:06d}_{end:06d}.mp4')
        rows.append((name, youtube_id, 0, end, split if split != 'validate' else 'val'))
        jobs.append((path, name, clip_seed))
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
