r"""The preview log-mel's training-set mean and std for Listen to Look's clip jobs.

  python -m avsf_jax.tools.ltl_audio_statistics --config=configs/listen_to_look.py:finetune \
      --config.input.dataset=activitynet [--batches=200]

Reads `--batches` training batches of the config's dataset through `input.ltl_pipeline` (audio
only: no frame is decoded) and prints the flags to pass to every clip job of that dataset
(teacher, distillation, fine-tuning): `--config.audio.mean=M --config.audio.std=S` (spec §2.2:
the normalisation is computed on the training set; the exports carry it on to the banks).
"""

from absl import app, flags
from ml_collections import config_flags

from avsf_jax import console

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A Listen to Look clip config.')
_BATCHES = flags.DEFINE_integer('batches', 200, 'Training batches to average over.')


def main(argv):
  del argv
  from avsf_jax.input import ltl_pipeline  # noqa: PLC0415 - TensorFlow

  mean, std = ltl_pipeline.audio_statistics(_CONFIG.value, _BATCHES.value)
  print(f'--config.audio.mean={mean:.4f} --config.audio.std={std:.4f}')


if __name__ == '__main__':
  console.define_flags()
  app.run(console.guard('ltl_audio_statistics', main), flags_parser=console.parse_flags)
