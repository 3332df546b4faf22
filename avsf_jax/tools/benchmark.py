r"""Throughput benchmarks that print JSON-able figures. Suites are registered in `SUITES`.

  python -m avsf_jax.tools.benchmark --suite=input --config=configs/kinetics_r50.py [--json]
  python -m avsf_jax.tools.benchmark --suite=model --config=configs/kinetics_r50.py \
      --batch_per_device=32 --crop_size=224 --dtypes=bfloat16 --json
  python -m avsf_jax.tools.benchmark --suite=reference --config=configs/kinetics_r50.py:slowfast_4x16

`model` and `reference`: see `avsf_jax/benchmarking.py` (the real compiled train step on
synthetic in-memory batches, and PyTorchVideo's implementation on the same device).

`input`: training clips per second on ONE core for the config's clip geometry (4x16: 32 Fast
frames at 224 plus a 128 x 80 log-mel), through the tf.data pipeline over prepared JPEG frames,
and, in the same run on the same clips, the PySlowFast way: PyAV seeks and decodes the clip's
frames (and its audio) from the mp4, then scale jitter, crop, flip and log-mel in numpy. The
videos are generated: 10 s, 30 fps, 568x320 (Kinetics prepared at short side 320, as PySlowFast
users store it), H.264 with x264's default keyframe interval, AAC 44.1 kHz stereo.
"""

import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from avsf_jax import console

_WIDTH, _HEIGHT, _FPS, _SECONDS, _RATE = 568, 320, 30, 10.0, 44100


def _write_source_videos(manual_dir: str, count: int) -> list[str]:
  """Kinetics-layout folder of textured moving videos with a tone; returns the mp4 paths."""
  from avsf_jax.input.prepare import synthetic

  paths, rows = [], []
  for i in range(count):
    rng = np.random.default_rng(i)
    n = int(_SECONDS * _FPS)
    # A smooth scene panning 4 px per frame with a bright object crossing it: natural-image-like
    # JPEG and H.264 sizes (random noise would make both codecs unrealistically slow).
    coarse = rng.integers(0, 255, size=(_HEIGHT // 16, (_WIDTH + 4 * n) // 16, 3), dtype=np.uint8)
    scene = np.asarray(Image.fromarray(coarse).resize((_WIDTH + 4 * n, _HEIGHT), Image.BICUBIC))
    frames = np.stack([scene[:, 4 * k : 4 * k + _WIDTH] for k in range(n)])
    for k in range(n):
      x = (7 * k) % (_WIDTH - 60)
      frames[k, 100:160, x : x + 60] = (240, 200, 40)
    t = np.arange(int(_SECONDS * _RATE)) / _RATE
    audio = np.stack(
      [0.3 * np.sin(2 * np.pi * 440 * t), 0.05 * rng.standard_normal(t.size)]
    ).astype(np.float32)
    vid = f'bench{i:06d}'
    folder = os.path.join(manual_dir, 'train', 'abseiling')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'{vid}_000000_000010.mp4')
    synthetic.write_video(path, frames, _FPS, audio, _RATE)
    paths.append(path)
    rows.append(f'abseiling,{vid},0,10,train\n')
  with open(os.path.join(manual_dir, 'train.csv'), 'w') as f:
    f.write('label,youtube_id,time_start,time_end,split\n' + ''.join(rows))
  return paths


def _pyslowfast_clip(path: str, rng: np.random.Generator, config, mel_weights: np.ndarray) -> dict:
  """One training clip the PySlowFast way (PyAV decode of the clip from the mp4), on one thread."""
  import av
  import scipy.signal

  inp, aud = config.input, config.audio
  num_fast = config.model.alpha * inp.num_frames
  with av.open(path) as container:
    stream = container.streams.video[0]
    stream.thread_count = 1
    fps = float(stream.average_rate)
    num_frames = int(round(_SECONDS * fps))
    clip_size = inp.num_frames * inp.tau * fps / inp.target_fps
    start = rng.uniform(0, max(num_frames - clip_size, 0))
    index = np.clip(np.linspace(start, start + clip_size - 1, num_fast), 0, num_frames - 1).astype(
      int
    )
    t0, t1 = index[0] / fps, (index[-1] + 1) / fps
    container.seek(int(t0 / stream.time_base), stream=stream, backward=True)
    decoded = {}
    for frame in container.decode(stream):
      k = int(round(frame.time * fps))
      if k > index[-1]:
        break
      if k >= index[0]:
        decoded[k] = frame.to_ndarray(format='rgb24')
    frames = [decoded.get(k, decoded[max(decoded)]) for k in index]
    astream = container.streams.audio[0]
    container.seek(int(t0 / astream.time_base), stream=astream, backward=True)
    chunks = []
    for frame in container.decode(astream):
      if frame.time > t1:
        break
      chunks.append(frame.to_ndarray().mean(axis=0))
  samples = scipy.signal.resample_poly(np.concatenate(chunks), 160, 441)
  short = int(rng.integers(inp.jitter_scales[0], inp.jitter_scales[1] + 1))
  scale = short / min(_HEIGHT, _WIDTH)
  size = (round(_WIDTH * scale), round(_HEIGHT * scale))
  y = int(rng.integers(0, size[1] - inp.crop_size + 1))
  x = int(rng.integers(0, size[0] - inp.crop_size + 1))
  clip = np.stack(
    [
      np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR))[
        y : y + inp.crop_size, x : x + inp.crop_size
      ]
      for f in frames
    ]
  )
  if rng.uniform() < 0.5:
    clip = clip[:, :, ::-1]
  video = (clip.astype(np.float32) / 255.0 - np.asarray(inp.mean, np.float32)) / np.asarray(
    inp.std, np.float32
  )
  n = int(round(inp.num_frames * inp.tau / inp.target_fps * aud.sample_rate))
  segment = np.pad(samples[:n], (0, max(0, n - samples.size)))
  windows = np.lib.stride_tricks.sliding_window_view(segment, aud.window_size)[:: aud.hop_size]
  power = np.abs(np.fft.rfft(windows * np.hanning(aud.window_size + 1)[:-1], aud.fft_size)) ** 2
  spectrogram = np.log(power @ mel_weights + aud.log_offset)
  rows = np.linspace(0, spectrogram.shape[0] - 1, aud.num_frames).astype(int)
  return {
    'fast': video,
    'slow': video[:: config.model.alpha],
    'audio': (spectrogram[rows] - aud.mean) / aud.std,
  }


def input_suite(config) -> dict:
  """Training clips/s per core: tf.data over prepared frames vs PyAV decoding of the mp4s."""
  import tensorflow as tf

  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  from avsf_jax.input import audio, pipeline
  from avsf_jax.input.prepare import builders

  pipeline.hide_accelerators_from_tf()
  workdir = flags.FLAGS.workdir or tempfile.mkdtemp(prefix='avsf_bench_')
  manual_dir, data_dir = os.path.join(workdir, 'raw'), os.path.join(workdir, 'data')
  if not os.path.exists(os.path.join(manual_dir, 'train.csv')):
    _write_source_videos(manual_dir, flags.FLAGS.num_videos)
  paths = sorted(
    os.path.join(d, f) for d, _, fs in os.walk(manual_dir) for f in fs if f.endswith('.mp4')
  )
  config.input.dataset, config.input.data_dir = 'kinetics400', data_dir
  builder = builders.get_builder('kinetics400', data_dir, short_side=config.input.frame_short_side)
  if not builders.is_prepared(builder):
    builders.build(builder, manual_dir)
  batch = 8
  config.input.batch_size = batch
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  num_clips = flags.FLAGS.num_clips
  dataset = pipeline.make_train_dataset(config, seed=0).with_options(options)
  iterator = dataset.as_numpy_iterator()
  next(iterator)  # warm-up: tracing, file opening
  begin = time.perf_counter()
  for _ in range(num_clips // batch):
    example = next(iterator)
  ours = (num_clips // batch) * batch / (time.perf_counter() - begin)

  mel_weights = audio.mel_matrix(
    config.audio.sample_rate, config.audio.fft_size, config.audio.num_mel_bins
  )
  rng = np.random.default_rng(0)
  _pyslowfast_clip(paths[0], rng, config, mel_weights)
  begin = time.perf_counter()
  for i in range(num_clips):
    reference = _pyslowfast_clip(paths[i % len(paths)], rng, config, mel_weights)
  theirs = num_clips / (time.perf_counter() - begin)
  assert reference['fast'].shape == example['fast'].shape[1:]
  return {
    'suite': 'input',
    'geometry': {
      k: list(v.shape[1:]) for k, v in example.items() if k in ('slow', 'fast', 'audio')
    },
    'source_video': f'{_WIDTH}x{_HEIGHT} {_FPS} fps {_SECONDS:g} s H.264 (x264 default GOP) + AAC {_RATE} Hz stereo',
    'clips_per_s_per_core_tfdata': round(ours, 2),
    'clips_per_s_per_core_pyav': round(theirs, 2),
    'ratio': round(ours / theirs, 2),
    'cpu': _cpu_name(),
  }


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return 'unknown'


def model_suite(config) -> dict:
  """Training-step and inference clips/s, compile time, memory, GFLOPs and MFU."""
  from avsf_jax.benchmarks import suites as benchmarking  # noqa: PLC0415 - keeps the input suite free of JAX

  result = benchmarking.model_suite(
    config,
    batch_per_device=flags.FLAGS.batch_per_device,
    crop=flags.FLAGS.crop_size,
    dtypes=tuple(flags.FLAGS.dtypes),
    steps=flags.FLAGS.steps,
    peak_tflops=flags.FLAGS.peak_tflops,
    conv_lowering='xla' if flags.FLAGS.plain_convolutions else flags.FLAGS.conv_lowering,
  )
  result['cpu'] = _cpu_name()
  return benchmarking.as_numpy_free(result)


def reference_suite(config, ours: dict | None = None) -> dict:
  """PyTorchVideo on the same device, with ours measured in the same run; ratios ours/theirs."""
  import jax  # noqa: PLC0415

  from avsf_jax.benchmarks import suites as benchmarking  # noqa: PLC0415

  if ours is None:
    ours = model_suite(config)
  result = benchmarking.reference_suite(
    config,
    batch=flags.FLAGS.batch_per_device * jax.device_count(),
    crop=flags.FLAGS.crop_size,
    steps=max(2, flags.FLAGS.steps // 2),
    ours=ours,
  )
  return benchmarking.as_numpy_free({'model': ours, 'reference': result})


def all_suites(config) -> dict:
  ours = model_suite(config)
  return {'input': input_suite(config), **reference_suite(config, ours)}


SUITES = {
  'input': input_suite,
  'model': model_suite,
  'reference': reference_suite,
  'all': all_suites,
}


def main(argv):
  del argv
  if flags.FLAGS.suite not in SUITES:
    raise app.UsageError(f'--suite={flags.FLAGS.suite}: one of {sorted(SUITES)}')
  result = SUITES[flags.FLAGS.suite](flags.FLAGS.config)
  if flags.FLAGS.json:
    print(json.dumps(result))
  else:
    for key, value in result.items():
      print(f'{key}: {value}')


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  flags.DEFINE_string('suite', 'input', 'Which suite to run: one of SUITES.')
  config_flags.DEFINE_config_file('config', None, 'Config file (with :variant).')
  flags.DEFINE_bool('json', False, 'Print one JSON object instead of text.')
  flags.DEFINE_integer('num_videos', 6, 'Generated videos (input suite).')
  flags.DEFINE_integer('num_clips', 96, 'Timed clips per method (input suite).')
  flags.DEFINE_string('workdir', None, 'Where to put generated data (default: a temp dir).')
  flags.DEFINE_integer('batch_per_device', 8, 'Clips per device (model/reference).')
  flags.DEFINE_integer('crop_size', 224, 'Square view size (model/reference).')
  flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes (model).')
  flags.DEFINE_integer('steps', 10, 'Timed steps (model/reference).')
  flags.DEFINE_float('peak_tflops', None, 'Peak TFLOP/s per device for MFU.')
  flags.DEFINE_bool(
    'plain_convolutions', False, 'Model suite: same as --conv_lowering=xla (kept for old commands).'
  )
  flags.DEFINE_enum(
    'conv_lowering',
    None,
    ['auto', 'xla', 'lowered'],
    "Model suite: override model.conv_lowering (default: the config's, i.e. auto).",
  )


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  console.define_flags()
  app.run(console.guard('benchmark', main), flags_parser=console.parse_flags)
