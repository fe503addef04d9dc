"""Shared fixtures: dataset location and hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("ci" if IN_CI else os.environ.get("HYPOTHESIS_PROFILE", "default"))


def ml100k_dir() -> Path:
    return Path(os.environ.get("LTE_ML100K", ROOT.parent / "shared" / "data" / "ml-100k"))


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """The MovieLens 100K directory from ../shared (never copied into the repo).

    Outside CI a missing dataset skips; in CI it fails, because the tests that need it are
    the ones that check real data end to end.
    """
    path = ml100k_dir()
    if not (path / "u.data").is_file() or not (path / "item_embeddings.npy").is_file():
        message = f"ML-100K not found at {path} (set LTE_ML100K)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
