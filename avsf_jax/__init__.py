"""avsf_jax: Audiovisual SlowFast Networks and SlowFast in JAX/Flax."""

__version__ = '0.1.0'
