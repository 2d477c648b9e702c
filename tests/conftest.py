"""Shared test fixtures: seeded generators and the location of ../shared (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
