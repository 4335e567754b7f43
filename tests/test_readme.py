"""Every ```python block in README.md runs, in order, in one namespace (examples cannot rot).

The OpenSim example reads the shared Gait2392 files; it runs in a temporary folder holding
copies of them, and is left out (the others still run) when the shared data is absent."""
import re
import shutil
from pathlib import Path

from .shared import DATA

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
GAIT2392 = ("subject01_simbody.osim", "subject01_Setup_IK.xml", "subject01_walk1.trc", "opensim46_walk1_ik.mot")


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    assert len(BLOCKS) >= 4
    monkeypatch.chdir(tmp_path)
    src = DATA / "opensim-gait2392"
    have_data = all((src / f).exists() for f in GAIT2392)
    if have_data:
        for f in GAIT2392:
            shutil.copy(src / f, tmp_path / f)
    ns: dict = {}
    ran = 0
    for i, block in enumerate(BLOCKS):
        if ".osim" in block and not have_data:
            continue
        exec(compile(block, f"README python block {i}", "exec"), ns)
        ran += 1
    assert ran >= len(BLOCKS) - 1
    if have_data:
        assert (tmp_path / "walk1_kinfunc.mot").exists()
        assert float(ns["deg"].max()) < 0.5  # the README's claim: angles match OpenSim
