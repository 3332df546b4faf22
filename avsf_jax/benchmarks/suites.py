"""Model and reference (PyTorch) throughput benchmarks behind `avsf_jax.tools.benchmark`.

`model_suite` times the real compiled training step (`train.Trainer.train_step`, sharded over
every local device, donated state) and the jitted eval forward pass on in-memory synthetic
batches (`fake_data`), per compute dtype. It reports clips/s, compile time, XLA's memory
analysis of the compiled step (and the device's peak bytes where the backend tracks them),
GFLOPs from the model's own multiply-add count, and MFU against the device's peak.

`reference_suite` times PyTorchVideo's implementation of the same architecture on the same
device (eval / SGD step; on CUDA with bf16 autocast and channels-last-3d) and prints the
ratio ours / theirs of throughputs (above 1.0: we are faster).

FLOPs convention: the papers count multiply-adds; MFU uses 2 FLOPs per multiply-add, and a
training step is counted as 3x the forward pass (forward + two backward products).
"""

import contextlib
import copy
import io
import os
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from avsf_jax import mesh as mesh_lib
from avsf_jax import models, train
from avsf_jax.input import fake as fake_data
from avsf_jax.models import convolution, stats

# Dense peak FLOP/s per device for the compute dtype (f32 on NVIDIA: TF32 tensor cores, which
# XLA uses for f32 matmuls/convs at default precision).
PEAK_FLOPS = {
  ('h100', 'bfloat16'): 989e12,
  ('h100', 'float32'): 494e12,
  ('h200', 'bfloat16'): 989e12,
  ('h200', 'float32'): 494e12,
  ('a100', 'bfloat16'): 312e12,
  ('a100', 'float32'): 156e12,
  ('v100', 'float32'): 15.7e12,
  ('tpu v4', 'bfloat16'): 275e12,
  ('tpu v5 lite', 'bfloat16'): 197e12,
  ('tpu v5e', 'bfloat16'): 197e12,
  ('tpu v5p', 'bfloat16'): 459e12,
  ('tpu v6', 'bfloat16'): 918e12,
}


def peak_flops(device_kind: str, dtype: str, override_tflops: float | None) -> float | None:
  """Peak FLOP/s of one device, from `--peak_tflops` or the table above (None if unknown)."""
  if override_tflops:
    return override_tflops * 1e12
  kind = device_kind.lower()
  for (name, table_dtype), value in PEAK_FLOPS.items():
    if name in kind and table_dtype == dtype:
      return value
  return None


def _timed(fn: Callable[[], Any], steps: int, warmup: int) -> float:
  """Median seconds per call of `fn` (which must block) over `steps` calls after `warmup`.

  The median, not the mean: a step slowed by another process on a shared machine moves
  it little, so two implementations timed one after the other compare fairly.
  """
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _bench_config(config, *, dtype: str, batch: int, crop: int) -> Any:
  cfg = copy.deepcopy(config)
  cfg.model.dtype = dtype
  cfg.input.dataset = 'fake'
  cfg.input.batch_size = batch
  cfg.input.crop_size = crop
  cfg.input.test_crop_size = crop
  if cfg.model.get('head_pooling') == 'window':  # the fixed test window fits the crop
    cfg.model.head_window = (crop // 32, crop // 32)
  cfg.model.bn_group_size = min(cfg.model.bn_group_size, batch // jax.device_count()) or 0
  fake = dict(cfg.get('fake_data') or {})
  fake['num_train_examples'] = max(batch * 4, fake.get('num_train_examples', 0))
  cfg.fake_data = fake
  return cfg


def _peak_bytes() -> int | None:
  memory = jax.local_devices()[0].memory_stats() or {}
  return memory.get('peak_bytes_in_use')


def _measure(config, *, dtype: str, batch: int, crop: int, steps: int, warmup: int) -> dict:
  """One dtype's row: the compiled train step and eval forward pass, timed."""
  cfg = _bench_config(config, dtype=dtype, batch=batch, crop=crop)
  trainer = train.Trainer(cfg)
  state = trainer.initial_state()
  local = next(fake_data.make_train_iterator(cfg, seed=0))
  global_batch = mesh_lib.global_batch(local, trainer.experiment.batch_sharding)
  rng = trainer.train_rng

  start = time.perf_counter()
  compiled = trainer.train_step.lower(state, global_batch, rng).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  holder = {'state': state}

  def step():
    holder['state'], metrics = compiled(holder['state'], global_batch, rng)
    jax.block_until_ready(metrics)

  train_s = _timed(step, steps, warmup)

  model = trainer.experiment.model
  inputs = {p: global_batch[p] for p in model.pathways}
  variables = holder['state'].variables()
  start = time.perf_counter()
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0]).lower(variables, inputs)
  forward = forward.compile()
  infer_compile_s = time.perf_counter() - start
  infer_s = _timed(lambda: jax.block_until_ready(forward(variables, inputs)), steps, warmup)
  return {
    'dtype': dtype,
    'train_step_s': train_s,
    'train_compile_s': compile_s,
    'infer_batch_s': infer_s,
    'infer_compile_s': infer_compile_s,
    'compiled_temp_bytes': getattr(memory, 'temp_size_in_bytes', None),
    'compiled_argument_bytes': getattr(memory, 'argument_size_in_bytes', None),
    'peak_device_bytes': _peak_bytes(),
  }


def model_suite(
  config,
  *,
  batch_per_device: int = 8,
  crop: int = 224,
  dtypes: tuple[str, ...] = ('float32', 'bfloat16'),
  steps: int = 10,
  warmup: int = 2,
  peak_tflops: float | None = None,
  conv_lowering: str | None = None,
) -> dict[str, Any]:
  """Training-step and inference throughput of `config`'s model per dtype (see module doc).

  `conv_lowering` overrides `config.model.conv_lowering` ('xla', 'lowered' or 'auto'), to
  compare XLA's own convolutions with the CPU-oriented lowerings on any backend.
  """
  if conv_lowering:
    config = copy.deepcopy(config)
    config.model.conv_lowering = conv_lowering
  devices = jax.device_count()
  batch = batch_per_device * devices
  model = models.build_model(config.model)
  size = stats.model_stats(model, models.inputs_for(model, config, crop_size=crop))
  macs = size['gflops'] * 1e9
  kind = jax.devices()[0].device_kind
  rows = []
  for dtype in dtypes:
    row = _measure(config, dtype=dtype, batch=batch, crop=crop, steps=steps, warmup=warmup)
    peak = peak_flops(kind, dtype, peak_tflops)
    train_flops = 3 * 2 * macs * batch / row['train_step_s']
    infer_flops = 2 * macs * batch / row['infer_batch_s']
    row.update(
      train_clips_per_s=batch / row['train_step_s'],
      infer_clips_per_s=batch / row['infer_batch_s'],
      train_mfu=train_flops / (peak * devices) if peak else None,
      infer_mfu=infer_flops / (peak * devices) if peak else None,
    )
    rows.append(row)
  return {
    'suite': 'model',
    'device_kind': kind,
    'devices': devices,
    'global_batch': batch,
    'crop': crop,
    'gflops_per_clip': size['gflops'],
    'params': size['params'],
    'convolutions': convolution.resolve(config.model.conv_lowering),
    'peak_tflops_per_device': {d: (peak_flops(kind, d, peak_tflops) or 0) / 1e12 for d in dtypes},
    'rows': rows,
  }


# -- The PyTorch reference --------------------------------------------------------------------


def _import_pytorchvideo():
  """PyTorchVideo's model builders; torchvision (detection heads only) is stubbed if absent."""
  import torch  # noqa: PLC0415 - optional, for this suite only

  try:
    import torchvision  # noqa: F401, PLC0415
  except ImportError:
    stub = types.ModuleType('torchvision')
    stub.ops = types.ModuleType('torchvision.ops')
    stub.ops.RoIAlign = object
    sys.modules.setdefault('torchvision', stub)
    sys.modules.setdefault('torchvision.ops', stub.ops)
  from pytorchvideo.models import audio_visual_slowfast, slowfast  # noqa: PLC0415

  return torch, slowfast, audio_visual_slowfast


def pytorchvideo_model(config, crop: int):
  """PyTorchVideo's SlowFast (or AVSlowFast) with the config's clip geometry and crop."""
  m = config.model
  if m.depth not in (50, 101) or m.slow_width != 64 or m.beta_inv != 8:
    raise ValueError(
      f'reference suite: PyTorchVideo builds ResNet-50/101 SlowFast with 64/8 channels; '
      f'config.model has depth={m.depth}, slow_width={m.slow_width}, beta_inv={m.beta_inv}'
    )
  torch, slowfast, av = _import_pytorchvideo()
  t, alpha, depth = config.input.num_frames, config.model.alpha, config.model.depth
  side = crop // 32
  kernel = config.model.fusion_kernel
  if 'audio' in config.model.pathways:
    # PyTorchVideo's builder hard-codes the 8x8 geometry of its fusions (Fast->Slow stride 4,
    # Audio->Slow strides for 8 Slow frames); give it the config's. Its layout stays its own:
    # laterals and A->FS fusions at all four junctions (pool1, res2, res3, res4).
    audio_t = config.audio.num_frames
    audio_frames_per_junction = (audio_t, audio_t, audio_t // 2, audio_t // 4)
    fusion = av.AudioToSlowFastFusionBuilder(
      slowfast_channel_reduction_ratio=8,
      slowfast_audio_reduction_ratio=2,
      conv_fusion_channel_ratio=2,
      conv_kernel_size=(kernel, 1, 1),
      conv_kernel_size_a=(config.model.audio_fusion_kernel, 1, 1),
      conv_stride=(alpha, 1, 1),
      conv_stride_a=tuple((a // t, 1, 1) for a in audio_frames_per_junction),
    )
    model = av.create_audio_visual_slowfast(
      fusion_builder=fusion.create_module,
      model_depth=depth,
      model_num_class=config.model.num_classes,
      head_pool_kernel_sizes=(
        (t, side, side),
        (alpha * t, side, side),
        (config.audio.num_frames // 8, 1, config.audio.num_mel_bins // 8),
      ),
    )
  else:
    model = slowfast.create_slowfast(
      model_depth=depth,
      model_num_class=config.model.num_classes,
      slowfast_fusion_conv_kernel_size=(kernel, 1, 1),
      slowfast_fusion_conv_stride=(alpha, 1, 1),
      head_pool_kernel_sizes=((t, side, side), (alpha * t, side, side)),
    )
  return torch, model


def tiny_pytorchvideo_slowfast(config):
  """A depth-18 PyTorchVideo SlowFast about as narrow as `gpu.tiny_config` (8/2 stem
  channels, Fast->Slow stride alpha): the CPU test form of the reference, not the same
  network as ours."""
  torch, slowfast, _ = _import_pytorchvideo()
  t, alpha = config.input.num_frames, config.model.alpha
  model = slowfast.create_slowfast(
    model_depth=18,
    model_num_class=config.model.num_classes,
    stem_dim_outs=(8, 2),
    slowfast_channel_reduction_ratio=(4,),
    slowfast_fusion_conv_stride=(alpha, 1, 1),
    head_pool_kernel_sizes=((t, 1, 1), (alpha * t, 1, 1)),
  )
  return torch, model


def pytorch_rates(
  torch, model, config, *, batch: int, crop: int, steps: int, warmup: int
) -> dict[str, Any]:
  """Median seconds of PyTorch's inference and SGD step of `model` on random clips.

  On CUDA the way PyTorch users run it fastest without compiling: bf16 autocast (AMP),
  channels_last_3d tensors and weights, cudnn.benchmark (cuDNN picks its algorithms per
  shape in the warm-up steps). On CPU: float32, the process's threads.
  """
  cuda = torch.cuda.is_available()
  device = torch.device('cuda' if cuda else 'cpu')
  model = model.to(device)
  if cuda:
    torch.backends.cudnn.benchmark = True
    model = model.to(memory_format=torch.channels_last_3d)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
  t, alpha = config.input.num_frames, config.model.alpha
  xs = [torch.randn(batch, 3, t, crop, crop), torch.randn(batch, 3, alpha * t, crop, crop)]
  if 'audio' in config.model.pathways:
    xs.append(torch.randn(batch, 1, config.audio.num_frames, 1, config.audio.num_mel_bins))
  inputs = [x.to(device) for x in xs]
  if cuda:
    inputs = [x.contiguous(memory_format=torch.channels_last_3d) for x in inputs]
  labels = torch.randint(0, config.model.num_classes, (batch,), device=device)
  autocast = torch.autocast('cuda', dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
  optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

  def sync():
    if cuda:
      torch.cuda.synchronize()

  def infer():
    with torch.no_grad(), autocast:
      model(list(inputs))
    sync()

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      loss = torch.nn.functional.cross_entropy(model(list(inputs)), labels)
    loss.backward()
    optimizer.step()
    sync()

  # PyTorchVideo 0.1.5's FuseAudioToFastSlow prints a tensor size on every call; keep this
  # process's stdout for the JSON result.
  with contextlib.redirect_stdout(io.StringIO()):
    model.eval()
    infer_s = _timed(infer, steps, warmup)
    model.train()
    train_s = _timed(train_step, steps, warmup)
  return {
    'implementation': 'pytorchvideo',
    'device': str(device),
    'amp': 'bf16 autocast + channels_last_3d + cudnn.benchmark' if cuda else 'none (CPU, float32)',
    'compute_dtype': 'bfloat16' if cuda else 'float32',
    'torch_threads': torch.get_num_threads(),
    'infer_batch_s': infer_s,
    'train_step_s': train_s,
    'peak_device_bytes': int(torch.cuda.max_memory_allocated()) if cuda else None,
    'params': sum(p.numel() for p in model.parameters()),
  }


def reference_suite(
  config,
  *,
  batch: int = 8,
  crop: int = 224,
  steps: int = 5,
  warmup: int = 2,
  ours: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """PyTorchVideo's inference and SGD-step throughput on the same device, and the ratios."""
  torch, model = pytorchvideo_model(config, crop)
  rates = pytorch_rates(torch, model, config, batch=batch, crop=crop, steps=steps, warmup=warmup)
  result = {
    'suite': 'reference',
    'implementation': 'pytorchvideo',
    'torch': torch.__version__,
    'device': rates['device'],
    'amp': rates['amp'],
    'torch_threads': rates['torch_threads'],
    'batch': batch,
    'crop': crop,
    'infer_clips_per_s': batch / rates['infer_batch_s'],
    'train_clips_per_s': batch / rates['train_step_s'],
    'peak_device_bytes': rates['peak_device_bytes'],
    'params': rates['params'],
  }
  if ours:
    dtype = rates['compute_dtype']
    row = next((r for r in ours['rows'] if r['dtype'] == dtype), ours['rows'][0])
    result['ours_dtype'] = row['dtype']
    result['infer_speed_ratio'] = row['infer_clips_per_s'] / result['infer_clips_per_s']
    result['train_speed_ratio'] = row['train_clips_per_s'] / result['train_clips_per_s']
  return result


def cpu_threads() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def as_numpy_free(result: Any) -> Any:
  """JSON-safe: numpy scalars to Python numbers."""
  if isinstance(result, dict):
    return {k: as_numpy_free(v) for k, v in result.items()}
  if isinstance(result, list | tuple):
    return [as_numpy_free(v) for v in result]
  if isinstance(result, np.generic | jnp.ndarray):
    return float(result)
  return result
