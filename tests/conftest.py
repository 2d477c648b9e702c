"""Shared test fixtures: seeded generators and the location of ../shared (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Property tests are seeded too: the default profile draws the same examples on every run, so CI
# never goes red on a case no one has seen. Explore new cases by hand with
# HYPOTHESIS_PROFILE=explore (random draws, more examples); pin what they find with @example.
settings.register_profile("seeded", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seeded"))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
VALIDATION = SHARED / "validation"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests are deterministic."""
    return np.random.default_rng(12345)


@pytest.fixture
def fixtures_dir() -> Path:
    """``../shared/fixtures`` beside the checkout; the test is skipped where it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is not present beside the checkout")
    return FIXTURES


@pytest.fixture
def validation_dir() -> Path:
    """``../shared/validation`` beside the checkout; the test is skipped where it is absent."""
    if not VALIDATION.is_dir():
        pytest.skip("../shared/validation is not present beside the checkout")
    return VALIDATION
