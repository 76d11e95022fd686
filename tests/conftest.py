"""Shared fixtures: a seeded generator, the device, and an isolated cache folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from benchmark.compat import ensure_torchvision

ensure_torchvision()
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng() -> np.random.Generator:
    """A numpy generator with a fixed seed."""
    return np.random.default_rng(1234)


@pytest.fixture
def generator() -> torch.Generator:
    """A torch CPU generator with a fixed seed."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A private ldct-bench and torch cache: tests never touch the user's caches."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LDCT_BENCH_CACHE", str(cache / "ldct-bench"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    return cache


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
