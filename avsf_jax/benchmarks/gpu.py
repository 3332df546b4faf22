r"""The prepared one-GPU benchmark: `make bench-gpu` (or `python -m avsf_jax.benchmarks.gpu`).

For a machine with one NVIDIA GPU where TensorFlow is not installed: jax, flax, optax, orbax,
ml_collections and torch are enough (batches are synthetic and in memory, `input/fake.py`;
PyTorchVideo is optional, and its absence is written into the JSON). It prints ONE JSON
object within `--budget_s` (default 420 s, so that the whole command, imports included, stays
under 8 minutes):

- AVSlowFast 4x16 R50 and SlowFast 8x8 R50 at 224x224, bfloat16 and float32, batch 8, 16 and
  32 per device, both convolution forms (`--lowerings`, XLA's own and the CPU lowerings);
- per run: training-step and inference clips/s, compile times, XLA's planned peak memory of
  the compiled executable (arguments + outputs + temporaries - aliased), the process's peak
  device bytes so far, and MFU against the device's peak (`suites.PEAK_FLOPS`);
- PyTorchVideo's same networks on the same GPU (bf16 autocast, channels_last_3d,
  cudnn.benchmark), and the ratios ours / theirs (above 1.0: we are faster).

Order of work: runs are done most important first, so that a slow machine drops the least
useful ones. The headline (each model at the largest batch, first dtype, first lowering, then
PyTorch at that batch) comes first; then the other lowering at the headline; then the other
dtype; then smaller batches; then everything else. Before each run the remaining budget is
compared with an estimate of that run (the last measured run of the same model and kind,
scaled by batch for its timed steps); a run that would not fit is listed under `skipped`
instead. Each (model, dtype, lowering) builds its train state once; batch sizes slice one
synthetic batch.

`--tiny` is the CPU form `make test` runs: a narrow depth-14 SlowFast and a depth-18
PyTorchVideo SlowFast of similar width, one dtype, one batch per device, 1 timed step; its
ratios check the arithmetic only (the two networks are not the same one).
"""

import os

# Before JAX starts: leave GPU memory to PyTorch's runs in the same process (JAX preallocates
# 75% otherwise), and keep TensorFlow (if it happens to be installed) off the accelerator.
os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.6')

import copy  # noqa: E402
import importlib.util  # noqa: E402

# What `avsf_jax.train` needs besides jax; a GPU image may lack some (ml_collections is not
# on this workplace's H200 image): say which, rather than failing deep in an import.
REQUIRED = ('jax', 'flax', 'optax', 'orbax', 'ml_collections', 'absl', 'etils', 'matplotlib')
_MISSING = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
if _MISSING:
  raise SystemExit(
    f'avsf_jax.benchmarks.gpu needs {", ".join(_MISSING)} (pure-Python wheels can be '
    f'carried: pip download --no-deps {" ".join(n.replace("_", "-") for n in _MISSING)})'
  )
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from avsf_jax import config_lib, models, train  # noqa: E402
from avsf_jax import mesh as mesh_lib  # noqa: E402
from avsf_jax.benchmarks import suites  # noqa: E402
from avsf_jax.input import fake as fake_data  # noqa: E402
from avsf_jax.models import convolution, stats  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = {
  'avslowfast_4x16_r50': 'configs/kinetics_r50.py:avslowfast_4x16',
  'slowfast_8x8_r50': 'configs/kinetics_r50.py:slowfast_8x8',
}
# First guesses (seconds) for a run of a kind never measured yet in this process: an R50
# train-step compile with autotuning plus the inference compile and timed steps on an H100.
FIRST_GUESS_S = {'jax': 60.0, 'pytorch': 20.0}


def load_config(spec: str):
  """`configs/x.py:variant` relative to the repository, loaded as `--config=` would."""
  path, _, variant = spec.partition(':')
  file = REPO / path
  module_spec = importlib.util.spec_from_file_location(file.stem, file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def tiny_config():
  """A narrow depth-14 SlowFast 4x16 at 32x32, 2 Slow frames: a train step well under 1 s."""
  config = config_lib.base_config()
  config_lib.apply_preset(config, 'slowfast_4x16', depth=14)
  config.model.num_classes = 4
  config.model.slow_width = 8
  config.model.beta_inv = 4
  config.model.bn_group_size = 0
  config.input.num_frames = 2
  config.audio.num_frames = 32
  config.audio.num_mel_bins = 16
  return config


# -- The work plan ----------------------------------------------------------------------------


def plan(
  model_names: Sequence[str],
  dtypes: Sequence[str],
  batches: Sequence[int],
  lowerings: Sequence[str],
  reference: bool,
) -> list[dict[str, Any]]:
  """Every run, most important first (see the module doc); no run twice."""
  big = max(batches)
  others = sorted((b for b in batches if b != big), reverse=True)
  jobs: list[dict[str, Any]] = []

  def ours(model, dtype, batch, lowering):
    jobs.append(dict(kind='jax', model=model, dtype=dtype, batch=batch, lowering=lowering))

  def theirs(model, batch):
    if reference:
      jobs.append(dict(kind='pytorch', model=model, batch=batch))

  for model in model_names:
    ours(model, dtypes[0], big, lowerings[0])
    theirs(model, big)
  for model in model_names:
    for lowering in lowerings[1:]:
      ours(model, dtypes[0], big, lowering)
  for model in model_names:
    for dtype in dtypes[1:]:
      ours(model, dtype, big, lowerings[0])
  for batch in others:
    for model in model_names:
      for dtype in dtypes:
        ours(model, dtype, batch, lowerings[0])
      theirs(model, batch)
  for batch in [big, *others]:
    for model in model_names:
      for dtype in dtypes:
        for lowering in lowerings[1:]:
          ours(model, dtype, batch, lowering)
  unique, seen = [], set()
  for job in jobs:
    key = tuple(sorted(job.items()))
    if key not in seen:
      seen.add(key)
      unique.append(job)
  return unique


def estimate_s(job: dict[str, Any], done: Sequence[dict[str, Any]]) -> float:
  """Seconds `job` should take, from the last finished run of the same model and kind.

  Compiles and set-up are taken as they were; the timed steps scale with the batch. A run
  reusing a (model, dtype, lowering) state skips the initialisation that the first paid.
  """
  same = [r for r in done if r['kind'] == job['kind'] and r['model'] == job['model']]
  if not same:
    same = [r for r in done if r['kind'] == job['kind']]
  if not same:
    return FIRST_GUESS_S[job['kind']]
  last = same[-1]
  timed = last.get('timed_s', 0.0) * job['batch'] / last['batch']
  return last['wall_s'] - last.get('timed_s', 0.0) + timed


# -- Measuring --------------------------------------------------------------------------------


def planned_peak_bytes(compiled) -> int | None:
  """XLA's memory plan of one executable: arguments + outputs + temporaries - aliased."""
  memory = compiled.memory_analysis()
  if memory is None:
    return None
  return int(
    memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    + memory.temp_size_in_bytes
    - memory.alias_size_in_bytes
  )


def _timed(fn: Callable[[], Any], steps: int, warmup: int) -> tuple[float, float]:
  """(median seconds per call, seconds spent) for `fn`, which must block."""
  start = time.perf_counter()
  median = suites._timed(fn, steps, warmup)
  return median, time.perf_counter() - start


class JaxRuns:
  """Our compiled train step and forward pass; one train state per (model, dtype, lowering)."""

  def __init__(
    self, configs: dict[str, Any], *, crop: int, max_batch: int, steps: int, warmup: int
  ):
    self.configs, self.crop, self.max_batch = configs, crop, max_batch
    self.steps, self.warmup = steps, warmup
    self.states: dict[tuple, dict[str, Any]] = {}

  def _setup(self, model: str, dtype: str, lowering: str) -> dict[str, Any]:
    key = (model, dtype, lowering)
    if key not in self.states:
      config = copy.deepcopy(self.configs[model])
      config.model.conv_lowering = lowering
      config = suites._bench_config(config, dtype=dtype, batch=self.max_batch, crop=self.crop)
      config.model.bn_group_size = min(config.model.bn_group_size, 8)
      trainer = train.Trainer(config)
      local = next(fake_data.make_train_iterator(config, seed=0))
      self.states[key] = {'trainer': trainer, 'state': trainer.initial_state(), 'local': local}
    return self.states[key]

  def run(self, job: dict[str, Any]) -> dict[str, Any]:
    setup = self._setup(job['model'], job['dtype'], job['lowering'])
    trainer, batch = setup['trainer'], job['batch']
    local = {
      k: v[:batch] if np.ndim(v) and len(v) == self.max_batch else v
      for k, v in setup['local'].items()
    }
    inputs = mesh_lib.global_batch(local, trainer.experiment.batch_sharding)
    rng = trainer.train_rng
    start = time.perf_counter()
    compiled = trainer.train_step.lower(setup['state'], inputs, rng).compile()
    train_compile_s = time.perf_counter() - start

    def step():
      setup['state'], metrics = compiled(setup['state'], inputs, rng)
      jax.block_until_ready(metrics)

    train_step_s, train_timed_s = _timed(step, self.steps, self.warmup)
    model = trainer.experiment.model
    views = {p: inputs[p] for p in model.pathways}
    variables = setup['state'].variables()
    start = time.perf_counter()
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
    forward = forward.lower(variables, views).compile()
    infer_compile_s = time.perf_counter() - start
    infer_batch_s, infer_timed_s = _timed(
      lambda: jax.block_until_ready(forward(variables, views)), self.steps, self.warmup
    )
    return {
      'train_compile_s': train_compile_s,
      'infer_compile_s': infer_compile_s,
      'train_step_s': train_step_s,
      'infer_batch_s': infer_batch_s,
      'train_planned_peak_bytes': planned_peak_bytes(compiled),
      'infer_planned_peak_bytes': planned_peak_bytes(forward),
      'process_peak_bytes': suites._peak_bytes(),
      'timed_s': train_timed_s + infer_timed_s,
    }


class TorchRuns:
  """PyTorchVideo's network per model (built once), timed by `suites.pytorch_rates`."""

  def __init__(self, configs, builders, *, crop: int, steps: int, warmup: int):
    self.configs, self.builders, self.crop = configs, builders, crop
    self.steps, self.warmup = steps, warmup
    self.networks: dict[str, Any] = {}

  def run(self, job: dict[str, Any]) -> dict[str, Any]:
    if job['model'] not in self.networks:
      self.networks[job['model']] = self.builders[job['model']]()
    torch, network = self.networks[job['model']]
    start = time.perf_counter()
    rates = suites.pytorch_rates(
      torch,
      network,
      self.configs[job['model']],
      batch=job['batch'],
      crop=self.crop,
      steps=self.steps,
      warmup=self.warmup,
    )
    rates['timed_s'] = time.perf_counter() - start
    return rates


def _library_versions() -> dict[str, str]:
  versions = {'jax': jax.__version__}
  for name in ('flax', 'optax', 'orbax.checkpoint', 'torch', 'pytorchvideo'):
    try:
      module = importlib.import_module(name)
      versions[name] = getattr(module, '__version__', 'present')
    except ImportError as error:
      versions[name] = f'absent ({error})'
  return versions


def derive(result: dict[str, Any], macs: dict[str, float], peak: dict[str, float | None]) -> None:
  """Adds the figures that follow from the timings: clips/s, MFU and the ratios.

  MFU: 2 FLOPs per multiply-add, a training step counted as 3 forward passes, over the peak
  of all devices. Ratios pair each of our runs with PyTorch's run of the same model and
  batch whose compute type matches (bf16 autocast on CUDA: our bfloat16; CPU: float32).
  """
  devices = result['devices']
  for run in result['runs']:
    batch = run['batch'] * devices
    run['global_batch'] = batch
    run['train_clips_per_s'] = batch / run['train_step_s']
    run['infer_clips_per_s'] = batch / run['infer_batch_s']
    if run['kind'] == 'jax':
      flops = 2 * macs[run['model']] * batch
      device_peak = peak.get(run['dtype'])
      total = device_peak * devices if device_peak else None
      run['train_tflops_per_s'] = 3 * flops / run['train_step_s'] / 1e12
      run['infer_tflops_per_s'] = flops / run['infer_batch_s'] / 1e12
      run['train_mfu'] = 3 * flops / run['train_step_s'] / total if total else None
      run['infer_mfu'] = flops / run['infer_batch_s'] / total if total else None
  theirs = {(r['model'], r['batch']): r for r in result['runs'] if r['kind'] == 'pytorch'}
  ratios = []
  for run in result['runs']:
    match = theirs.get((run['model'], run['batch']))
    if run['kind'] != 'jax' or match is None or run['dtype'] != match['compute_dtype']:
      continue
    ratios.append(
      {
        'model': run['model'],
        'batch': run['batch'],
        'dtype': run['dtype'],
        'lowering': run['lowering'],
        'train_speed_ratio': run['train_clips_per_s'] / match['train_clips_per_s'],
        'infer_speed_ratio': run['infer_clips_per_s'] / match['infer_clips_per_s'],
      }
    )
  result['ratios'] = ratios


def benchmark(
  *,
  tiny: bool = False,
  model_names: Sequence[str] = tuple(MODELS),
  dtypes: Sequence[str] = ('bfloat16', 'float32'),
  batches: Sequence[int] = (8, 16, 32),
  lowerings: Sequence[str] | None = None,
  crop: int = 224,
  steps: int = 5,
  warmup: int = 2,
  budget_s: float = 420.0,
  peak_tflops: float | None = None,
  reference: bool = True,
) -> dict[str, Any]:
  """Runs the plan within `budget_s` and returns the JSON-able result (module doc)."""
  begin = time.perf_counter()
  if lowerings is None:
    # XLA's convolutions first: the default ('auto') on GPU; the CPU lowerings second.
    lowerings = ('xla', 'lowered')
  if tiny:
    configs = {'slowfast_tiny': tiny_config()}
  else:
    configs = {name: load_config(MODELS[name]) for name in model_names}
  versions = _library_versions()
  reference_note = None
  if reference and versions['pytorchvideo'].startswith('absent'):
    reference_note = f'PyTorchVideo reference not run: pytorchvideo {versions["pytorchvideo"]}'
    reference = False
  elif reference and versions['torch'].startswith('absent'):
    reference_note = f'PyTorchVideo reference not run: torch {versions["torch"]}'
    reference = False

  def builder(name):
    if tiny:
      return lambda: suites.tiny_pytorchvideo_slowfast(configs[name])
    return lambda: suites.pytorchvideo_model(configs[name], crop)

  builders = {name: builder(name) for name in configs}
  macs = {}
  for name, config in configs.items():
    net = models.build_model(config.model)
    macs[name] = stats.model_stats(net, models.inputs_for(net, config, crop_size=crop))['gflops']
    macs[name] *= 1e9
  kind = jax.devices()[0].device_kind
  peak = {d: suites.peak_flops(kind, d, peak_tflops) for d in dtypes}
  max_batch = max(batches) * jax.device_count()
  ours = JaxRuns(configs, crop=crop, max_batch=max_batch, steps=steps, warmup=warmup)
  theirs = TorchRuns(configs, builders, crop=crop, steps=steps, warmup=warmup)
  runs, skipped = [], []
  for job in plan(list(configs), dtypes, batches, lowerings, reference):
    elapsed = time.perf_counter() - begin
    guess = estimate_s(job, runs)
    if elapsed + guess > budget_s:
      skipped.append({**job, 'estimate_s': guess, 'reason': 'budget'})
      continue
    start = time.perf_counter()
    try:
      runner = ours if job['kind'] == 'jax' else theirs
      measured = runner.run({**job, 'batch': job['batch'] * jax.device_count()})
    except Exception as error:  # noqa: BLE001 - an OOM or a failed compile is a result too
      skipped.append({**job, 'reason': f'{type(error).__name__}: {str(error)[:300]}'})
      continue
    runs.append({**job, **measured, 'wall_s': time.perf_counter() - start})
    print(f'[{elapsed:6.1f} s] {runs[-1]}', file=sys.stderr, flush=True)
  result = {
    'benchmark': 'gpu',
    'tiny': tiny,
    'platform': jax.default_backend(),
    'device_kind': kind,
    'devices': jax.device_count(),
    'versions': versions,
    'tensorflow_loaded': any(m == 'tensorflow' or m.startswith('tensorflow.') for m in sys.modules),
    'crop': crop,
    'steps': steps,
    'warmup': warmup,
    'budget_s': budget_s,
    'auto_lowering_here': convolution.resolve('auto'),
    'peak_tflops_per_device': {d: (p or 0) / 1e12 for d, p in peak.items()},
    'models': {
      name: {'config': MODELS.get(name, 'tiny'), 'gflops_per_clip': macs[name] / 1e9}
      for name in configs
    },
    'reference_note': reference_note,
    'runs': runs,
    'skipped': skipped,
  }
  derive(result, macs, peak)
  result['elapsed_s'] = time.perf_counter() - begin
  return suites.as_numpy_free(result)


def main(argv: Sequence[str] | None = None) -> None:
  import argparse  # noqa: PLC0415

  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--tiny', action='store_true', help='CPU form for make test.')
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--dtypes', default='bfloat16,float32')
  parser.add_argument('--batches', default='8,16,32', help='Per device.')
  parser.add_argument('--lowerings', default='xla,lowered')
  parser.add_argument('--crop', type=int, default=224)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--budget_s', type=float, default=420.0)
  parser.add_argument('--peak_tflops', type=float, default=None)
  parser.add_argument('--no_reference', action='store_true')
  parser.add_argument('--output', default=None, help='Also write the JSON to this file.')
  args = parser.parse_args(argv)
  split = lambda s: [x for x in s.split(',') if x]  # noqa: E731
  lowerings = split(args.lowerings)
  if args.tiny:
    # One form on CPU (XLA:CPU's own 3-D convolutions compile and run several times slower).
    lowerings = [convolution.resolve('auto')]
    kwargs = dict(dtypes=('float32',), batches=(1,), crop=32, steps=1, warmup=1)
  else:
    kwargs = dict(
      model_names=split(args.models),
      dtypes=split(args.dtypes),
      batches=[int(b) for b in split(args.batches)],
      crop=args.crop,
      steps=args.steps,
      warmup=args.warmup,
    )
  result = benchmark(
    tiny=args.tiny,
    lowerings=lowerings,
    budget_s=args.budget_s,
    peak_tflops=args.peak_tflops,
    reference=not args.no_reference,
    **kwargs,
  )
  text = json.dumps(result)
  if args.output:
    pathlib.Path(args.output).write_text(text)
  print(text)


if __name__ == '__main__':
  main()
