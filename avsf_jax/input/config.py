"""Defaults of the `input` and `audio` config sections (no TensorFlow import)."""

import ml_collections


def input_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      'dataset': 'kinetics400',
      'data_dir': None,
      'train_split': 'train',
      'eval_split': 'validation',
      'pathways': ('slow', 'fast', 'audio'),
      'num_frames': 4,  # T: frames of the Slow pathway
      'tau': 16,  # raw-frame stride of the Slow pathway
      'alpha': 8,  # Fast takes alpha * T frames at stride tau / alpha
      'crop_size': 224,
      'jitter_scales': (256, 320),
      'test_short_side': 256,
      'test_crop_size': 256,
      'num_temporal_views': 10,
      'num_spatial_views': 3,
      'mean': (0.45, 0.45, 0.45),
      'std': (0.225, 0.225, 0.225),
      'batch_size': 1024,  # global, over all processes
      'eval_batch_size': 64,  # global, in videos
      # Added by the data pipeline (avsf_jax/input/pipeline.py).
      'frame_short_side': 320,  # short side of the stored JPEG frames (picks the prepared copy)
      'keep_no_audio': True,  # videos without audio: kept with has_audio=0 (False: skipped)
      'target_fps': 30.0,  # a clip spans T * tau frames at this rate, whatever the video's fps
      'flip': True,
      'min_negative_shift': 0.5,  # seconds between a clip's audio and its hard negative
      'spec_augment': False,
      'spec_augment_time_masks': 2,
      'spec_augment_time_width': 16,
      'spec_augment_freq_masks': 2,
      'spec_augment_freq_width': 8,
      'prefetch': 2,  # batches
    }
  )


def audio_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      'sample_rate': 16000,
      'window_size': 512,
      'hop_size': 256,
      'fft_size': 512,
      'num_mel_bins': 80,
      'num_frames': 128,
      'log_offset': 1e-8,
      'mean': -7.03,
      'std': 4.66,
    }
  )
