"""kernels/ ships as kinfunc.kernels (never as a top-level `kernels`), in editable installs
and in a clean wheel."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_maps_kernels_into_kinfunc():
    import kinfunc.kernels

    assert Path(kinfunc.kernels.__file__).resolve().parent == (ROOT / "kernels").resolve()
    from kinfunc.kernels import compose_chain  # noqa: F401


def test_wheel_contains_kinfunc_kernels_and_no_top_level_kernels(tmp_path):
    pytest.importorskip("setuptools")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip()[-200:]}")
    (whl,) = tmp_path.glob("kinfunc-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "kinfunc/kernels/__init__.py" in names and "kinfunc/kernels/chain.py" in names
    assert "kinfunc/py.typed" in names
    assert not any(n.startswith("kernels/") for n in names)
