"""Command-line tools: `python -m avsf_jax.tools.<name> --help`."""
