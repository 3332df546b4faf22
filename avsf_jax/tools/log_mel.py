r"""Decodes any audio or video file and writes its unnormalised (frames, 80) log-mel as .npy.

  python -m avsf_jax.tools.log_mel --input=clip.mp4 --output=clip.npy

Same code path as the input pipeline: PyAV decoding, channels averaged, resampled to 16 kHz
(`input/media.py`), then the TensorFlow log-mel of SPEC section 4 (`input/audio.py`) over the
whole file, not resampled to a fixed number of frames and not normalised.
"""

import av
import numpy as np
from absl import app, flags

from avsf_jax import config_lib, console, storage


def compute(path: str, audio_config=None) -> np.ndarray:
  """(frames, num_mel_bins) float32 natural-log mel spectrogram of the file's first audio stream.

  A file that is missing, unreadable, empty, not media or without audio raises
  `storage.FileFault` naming it and the fault.
  """
  from avsf_jax.input import audio, media, pipeline

  pipeline.hide_accelerators_from_tf()
  audio_config = audio_config or config_lib.audio_config()
  storage.check_readable(path, 'audio or video file')
  try:
    samples = media.decode_audio(path, audio_config.sample_rate)
  except media.MediaError as e:
    raise storage.FileFault(
      f'{path}: no audio could be decoded ({e.reason}; damaged, truncated or not media?)'
    ) from None
  except (av.error.FFmpegError, OSError, ValueError) as e:  # damaged data mid-stream
    raise storage.FileFault(
      f'{path}: the audio is damaged and cannot be decoded ({storage.first_line(e)})'
    ) from None
  # The pipeline reads int16 storage; quantise the same way so both give identical numbers.
  quantised = np.clip(np.round(samples * 32767.0), -32768, 32767) / 32768.0
  return audio.log_mel(quantised.astype(np.float32), audio_config).numpy()


def main(argv):
  del argv
  spectrogram = compute(flags.FLAGS.input)  # a FileFault ends it in one line (console.guard)
  np.save(flags.FLAGS.output, spectrogram)
  print(f'{flags.FLAGS.output}: {spectrogram.shape[0]} frames x {spectrogram.shape[1]} mel bins')


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  flags.DEFINE_string('input', None, 'Audio or video file.')
  flags.DEFINE_string('output', None, 'Output .npy file.')
  console.define_flags()


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['input', 'output'])
  app.run(console.guard('log_mel', main))
