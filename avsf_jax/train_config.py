"""Defaults of the training-side config sections.

`optim`, `loss`, `evals`, `mesh`, `checkpoint`, `logging` (and `fake_data`, the in-memory
source used when `input.dataset == 'fake'`). Durations are in epochs; `optim.epochs_to_steps`
turns them into steps once the dataset size and the global batch are known.
"""

import ml_collections


def sections() -> dict[str, ml_collections.ConfigDict]:
  return {
    'optim': ml_collections.ConfigDict(
      {
        'num_epochs': 256.0,
        'warmup_epochs': 34.0,
        'warmup_start_factor': 0.01,  # warm-up starts at this fraction of the peak LR
        'base_lr': 1.6,  # for a global batch of `base_batch_size`; scaled linearly
        'base_batch_size': 1024,
        'schedule': 'cosine',  # 'cosine' (half period to `end_factor`) or 'steps'
        'end_factor': 0.0,
        'decay_epochs': (),  # 'steps': epochs at which the LR is multiplied by decay_factor
        'decay_factor': 0.1,
        'momentum': 0.9,
        'nesterov': False,
        'weight_decay': 1e-4,
        'decay_norm_and_bias': False,  # True: weight decay on BN scales/biases and biases too
        'clip_grad_norm': 0.0,  # 0: no clipping
      }
    ),
    'loss': ml_collections.ConfigDict(
      {
        'label_smoothing': 0.0,
        'avs_weight': 1.0,
        'avs_margin': 0.99,
        # Curriculum: easy negatives (another clip's audio) until this fraction of training,
        # then `avs_hard_fraction` of the negatives are hard (same video, shifted in time).
        'avs_easy_until': 0.5,
        'avs_hard_fraction': 0.25,
        # A pair is masked out when its audio is near-silent (no audio track, or mean
        # normalized log-mel below this) ...
        'avs_silence_threshold': -2.0,
        # ... and a negative when it lies this close to the positive audio embedding.
        'avs_duplicate_distance': 0.01,
      }
    ),
    'evals': ml_collections.ConfigDict(
      {
        'every_epochs': 10.0,  # periodic single-view evaluation; 0: only the final one
        'periodic_multi_view': False,
        # How views combine into a video score: 'mean_softmax' (Kinetics, EPIC) or 'max'
        # (Charades: max over clips of the sigmoid scores).
        'view_aggregation': 'mean_softmax',
        'precise_bn_batches': 200,  # 0: keep the running averages
      }
    ),
    # Mesh axes and sizes; -1 takes the remaining devices. The batch is split over 'data'.
    'mesh': ml_collections.ConfigDict(
      {
        'data': -1,
        'param_sharding': 'replicated',  # or 'fsdp': shard parameters over 'data'
        'fsdp_min_size': 2**14,  # leaves smaller than this stay replicated under 'fsdp'
      }
    ),
    'checkpoint': ml_collections.ConfigDict(
      {'every_steps': 1000, 'keep': 3, 'async': True, 'save_on_preemption': True}
    ),
    'logging': ml_collections.ConfigDict({'every_steps': 50}),
    'fake_data': ml_collections.ConfigDict(
      {
        'num_train_examples': 64,
        'num_eval_examples': 16,
        'multi_label': False,
        'delay_s': 0.0,  # sleep before each training batch (simulates a slow pipeline)
        'nan_at_step': -1,  # fault injection for tests: a NaN video at this step's batch
      }
    ),
  }
