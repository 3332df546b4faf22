"""Small media files generated with PyAV for the data tests (no binary media in the repo)."""

import numpy as np

from avsf_jax.input.prepare import synthetic

FPS = 25
SAMPLE_RATE = 44100


def flash_click_media(num_frames=75, flash_frame=40, fps=FPS, sample_rate=SAMPLE_RATE, channels=2):
  """Dark frames with one white frame, and audio with one click at the flash's time."""
  frames = np.full((num_frames, 48, 64, 3), 20, np.uint8)
  frames[flash_frame] = 255
  audio = np.zeros((channels, int(num_frames / fps * sample_rate)), np.float32)
  click = int(round(flash_frame / fps * sample_rate))
  audio[:, click : click + 400] = 0.8
  return frames, audio


def write_clip(path, seed=0, seconds=3.0, fps=FPS, audio=True):
  """A small clip with moving content and a tone (content depends on `seed`)."""
  rng = np.random.default_rng(seed)
  n = int(seconds * fps)
  frames = rng.integers(0, 255, size=(1, 48, 64, 3), dtype=np.uint8).repeat(n, axis=0)
  frames = np.stack([np.roll(f, 2 * i, axis=1) for i, f in enumerate(frames)])
  samples = None
  if audio:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t))[None].astype(np.float32)
  synthetic.write_video(path, frames, fps, samples, SAMPLE_RATE)
