"""Shared fixtures: tiny seeded configurations and cubes built in tmp_path, never committed data."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from sim.config import SimConfig  # noqa: E402


@pytest.fixture
def small_config() -> SimConfig:
    """A 48 x 48 x 16 cube with the paper's physics (0.1" pixels, alma.cycle9.3, 230 GHz)."""
    return SimConfig().replace(**{"cube.size": 48, "cube.channels": 16, "seed": 3})
