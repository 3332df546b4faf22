"""Foreign checkpoints (PyTorchVideo, PySlowFast, Caffe2) -> our variables."""
