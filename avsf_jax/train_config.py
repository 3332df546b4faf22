"""Defaults of the training-side config sections: optim, loss, evals, mesh, checkpoint, logging."""

import ml_collections


def sections() -> dict[str, ml_collections.ConfigDict]:
  return {
    'optim': ml_collections.ConfigDict(
      {
        'num_epochs': 256,
        'warmup_epochs': 34.0,
        'base_lr': 1.6,  # for a global batch of `base_batch_size`; scaled linearly
        'base_batch_size': 1024,
        'momentum': 0.9,
        'nesterov': False,
        'weight_decay': 1e-4,
      }
    ),
    'loss': ml_collections.ConfigDict({'avs_weight': 1.0, 'avs_margin': 0.99}),
    'evals': ml_collections.ConfigDict({'every_epochs': 10}),
    'mesh': ml_collections.ConfigDict({'data': -1}),
    'checkpoint': ml_collections.ConfigDict({'every_steps': 1000, 'keep': 3}),
    'logging': ml_collections.ConfigDict({'every_steps': 50}),
  }
