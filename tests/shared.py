"""Where the shared real data lives (``../shared/data`` next to the checkout, or
``$KINFUNC_SHARED_DATA``); tests that need it skip cleanly when it is absent."""
import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("KINFUNC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def data(rel: str) -> Path:
    """Path of ``rel`` inside the shared data; skips the calling test when it is missing."""
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"shared data not found: {p}")
    return p
