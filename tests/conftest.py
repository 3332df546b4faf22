"""Session fixtures: 8 fake CPU devices, one compilation cache; helpers are in tests/helpers.py."""

import os

# Set before JAX is imported, as `make test` sets them: 8 fake CPU devices, and most XLA
# optimizations off (compiles of small programs dominate the suite).
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')

import jax  # noqa: E402
import pytest  # noqa: E402

from tests import helpers  # noqa: E402


@pytest.fixture
def config_loader():
  return helpers.load_config


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA compilation cache for the whole run, shared by the pytest-xdist
  workers (their base temp dirs share a parent) and by the subprocesses tests start, so
  the same train step or model is compiled once per run rather than once per process."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent
  cache = str(root / 'jax_cache')
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return cache
