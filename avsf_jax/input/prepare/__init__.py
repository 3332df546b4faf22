"""Offline preparation: raw videos + annotations -> TFDS datasets (worker processes, skip reports)."""
