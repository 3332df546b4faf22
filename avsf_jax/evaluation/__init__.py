"""Evaluation: multi-view scoring, the papers metrics, precise BN, plots. No TensorFlow."""
