"""Fixtures of the training tests: the tiny config (see tests/helpers.py)."""

import pytest

from tests import helpers


@pytest.fixture
def tiny_config():
  return helpers.tiny_config()
