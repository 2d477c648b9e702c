"""A seeded fuzz corpus for every reader: structure-aware mutations of small valid files (and of
the small real files in ../shared/fixtures when present) must each end within the read budget as
a valid image or a one-line HRTEMError. The mutation engine is scripts/fuzz_readers.py, which
also runs longer campaigns by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hrtem_core.io import load_image
from scripts import fuzz_readers
from tests.conftest import FIXTURES, REPO

N_INPUTS = 120  # 20 per family on average, about 15 s on one core
ADDRESS_SPACE = 3 * 1024**3


def test_every_seed_is_a_valid_image(tmp_path: Path) -> None:
    seeds = fuzz_readers.seed_files(tmp_path)  # the generated ones only
    assert sorted(seeds) == ["dm", "emd", "imageio", "mrc", "tiff"]
    for family, paths in seeds.items():
        for path in paths:
            pixel = 0.02 if family == "imageio" else None
            m = load_image(path, pixel_size_nm=pixel)
            assert m.shape == (32, 32), path.name
            assert m.pixel_size_nm == pytest.approx((0.02, 0.02), rel=1e-6), path.name
            if family != "imageio":  # lossy or 8-bit there
                np.testing.assert_allclose(m.data, fuzz_readers._image(), rtol=1e-6)


def test_mutations_are_seeded_and_change_the_file(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 8
    a = fuzz_readers.mutate_bytes(payload, np.random.default_rng(3))
    b = fuzz_readers.mutate_bytes(payload, np.random.default_rng(3))
    assert a == b and a != payload


def test_seeded_corpus_ends_cleanly(tmp_path: Path) -> None:
    """The corpus runs in a child process under a 3 GB address-space limit."""
    fixtures = FIXTURES if FIXTURES.is_dir() else None
    child = f"""
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))
from scripts import fuzz_readers
summary = fuzz_readers.run(seconds=600, iterations={N_INPUTS}, seed=20261206, out=Path(sys.argv[1]),
    formats=None, budget_s=10.0, isolate=False,
    fixtures=None if sys.argv[2] == "-" else Path(sys.argv[2]), log=lambda m: None)
print(json.dumps(summary))
"""
    result = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path / "fuzz"), str(fixtures or "-")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["inputs"] == N_INPUTS
    assert summary["findings"] == []
    outcomes = summary["outcomes"]
    assert "crash" not in outcomes
    # The corpus exercises both ends: some mutants still read, most are refused.
    assert outcomes.get("image", 0) > 0 and outcomes.get("ReadError", 0) > N_INPUTS // 3
