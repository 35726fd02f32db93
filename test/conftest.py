"""Shared test fixtures.

Tests needing the reference fixtures in ``../shared/mast3r_reference`` (next to the
checkout; override with ``MAST3R_SHARED_DIR``) skip with a clear reason when absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("MAST3R_SHARED_DIR", REPO_ROOT.parent / "shared"))
REFERENCE_DIR = SHARED_DIR / "mast3r_reference"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for model tests (cpu, cuda)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/mast3r_reference``; skips the test when it is absent."""
    if not (REFERENCE_DIR / "README.md").is_file():
        pytest.skip(
            f"reference fixtures not found at {REFERENCE_DIR} (they live in ../shared/, "
            "beside the checkout; set MAST3R_SHARED_DIR to point elsewhere)"
        )
    return REFERENCE_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module: on 2 shared cores this avoids OpenMP spin
    contention and keeps timings and results stable. Restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
