"""Input pipelines (tf.data) and dataset builders (TFDS). The only part that imports TensorFlow."""
