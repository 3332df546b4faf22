"""Audio-visual alignment through the whole path: mp4 -> prepared dataset -> training batches."""

import numpy as np
import pytest

from avsf_jax import config_lib
from avsf_jax.input import pipeline
from avsf_jax.input.prepare import builders, synthetic
from tests.input.media_helpers import SAMPLE_RATE

FPS = 25
FLASHES = (12, 37, 62)  # 1 s apart: a 16-frame clip holds at most one


@pytest.fixture(scope='module')
def flash_dataset(tmp_path_factory):
  """One 3 s video whose streams start at 0.5 s (video) and 0.3 s (audio), flash = click."""
  raw = tmp_path_factory.mktemp('flash_raw')
  video_start, audio_start = 0.5, 0.3
  frames = np.full((75, 48, 64, 3), 20, np.uint8)
  audio = np.zeros((2, int(3.5 * SAMPLE_RATE)), np.float32)
  for flash in FLASHES:
    frames[flash] = 255
    click = int(round((video_start - audio_start + flash / FPS) * SAMPLE_RATE))
    audio[:, click : click + 300] = 0.8
  (raw / 'train' / 'abseiling').mkdir(parents=True)
  path = raw / 'train' / 'abseiling' / 'flash000000_000000_000003.mp4'
  synthetic.write_video(
    str(path), frames, FPS, audio, SAMPLE_RATE, video_start_s=video_start, audio_start_s=audio_start
  )
  (raw / 'train.csv').write_text(
    'label,youtube_id,time_start,time_end,split\nabseiling,flash000000,0,3,train\n'
  )
  data_dir = str(tmp_path_factory.mktemp('flash_data'))
  builders.build(builders.get_builder('kinetics400', data_dir, num_workers=1), str(raw))
  return data_dir


def test_click_is_heard_within_one_frame_of_the_flash(flash_dataset):
  config = config_lib.base_config()
  # 16 consecutive frames at the video's own rate (T=16, tau=1, alpha=1, target_fps=25): frame j
  # of the clip is at j / 25 s; 0.64 s of audio = 39 log-mel frames, kept as they are.
  config.input.update(
    {
      'dataset': 'kinetics400',
      'data_dir': flash_dataset,
      'num_frames': 16,
      'tau': 1,
      'target_fps': 25.0,
      'crop_size': 48,
      'jitter_scales': (48, 48),
      'batch_size': 8,
    }
  )
  config.model.alpha = 1  # the clip geometry's alpha lives in the model section
  config.model.pathways = ('fast', 'audio')
  config.audio.num_frames = 39
  iterator = pipeline.make_train_iterator(config, seed=0)
  checked = 0
  for _ in range(3):
    batch = next(iterator)
    for video, spectrogram in zip(batch['fast'], batch['audio']):
      brightness = video.mean(axis=(1, 2, 3))
      loudness = spectrogram[..., 0].mean(axis=1)
      has_flash = brightness.max() > brightness.min() + 1.0
      has_click = loudness.max() > loudness.min() + 1.0
      assert has_flash == has_click
      if not has_flash:
        continue
      flash_time = np.argmax(brightness) / FPS
      click_time = (np.argmax(loudness) * 256 + 256) / 16000  # centre of the loudest window
      assert abs(click_time - flash_time) <= 1 / FPS
      checked += 1
  assert checked >= 5
