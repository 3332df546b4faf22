r"""Parameters and GFLOPs (multiply-adds) of a config's model, per pathway and in total.

Counts come from the model itself (`avsf_jax.models.stats`): parameters from
`jax.eval_shape(model.init)`, multiply-adds of every convolution and matrix product in the
eval-mode jaxpr for one test view (`--crop_size`, 256 by default, as the papers count; audio
`config.audio.num_frames` x `config.audio.num_mel_bins`, 128 x 80). Nothing is compiled.

  python -m avsf_jax.tools.model_stats --config=configs/kinetics_r50.py:slowfast_4x16
  python -m avsf_jax.tools.model_stats --config=configs/kinetics_r50.py \
      --config.model.audio_width_ratio=1.0 --config.model.audio_fusion=av_nonlocal --json
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from avsf_jax import console, models
from avsf_jax.models import stats

_ORDER = ('slow', 'fast', 'audio', 'fast_to_slow', 'audio_fusion', 'avs', 'head', 'other')


def compute(config, crop_size: int = 256) -> dict:
  """The stats dict of `models.stats.model_stats` for `config`'s model, plus the view."""
  model = models.build_model(config.model)
  inputs = models.inputs_for(model, config, crop_size=crop_size)
  result = stats.model_stats(model, inputs)
  result['view'] = {k: list(v.shape) for k, v in inputs.items()}
  return result


def format_table(result: dict) -> str:
  lines = [f'{"part":<14}{"params (M)":>12}{"GFLOPs":>10}']
  for group in _ORDER:
    p = result['params_by_group'].get(group, 0)
    f = result['gflops_by_group'].get(group, 0.0)
    if p or f:
      lines.append(f'{group:<14}{p / 1e6:>12.3f}{f:>10.2f}')
  lines.append(f'{"total":<14}{result["params"] / 1e6:>12.3f}{result["gflops"]:>10.2f}')
  lines.append('view: ' + ', '.join(f'{k} {tuple(v)}' for k, v in result['view'].items()))
  return '\n'.join(lines)


def main(argv):
  del argv
  if flags.FLAGS.config is None:
    sys.exit('model_stats: --config=CONFIG_FILE[:variant] is required')
  result = compute(flags.FLAGS.config, flags.FLAGS.crop_size)
  print(json.dumps(result, sort_keys=True) if flags.FLAGS.json else format_table(result))


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, because this module is
  also imported as a library (absl flags are process-global)."""
  config_flags.DEFINE_config_file('config', None, 'Config file (with :variant).')
  flags.DEFINE_integer('crop_size', 256, 'Spatial size of the (square) view.')
  flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')
  console.define_flags()


if __name__ == '__main__':
  define_flags()
  app.run(console.guard('model_stats', main), flags_parser=console.parse_flags)
