"""Benchmark suites (model, input, reference) that print JSON; `python -m avsf_jax.tools.benchmark`."""
