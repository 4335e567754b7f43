"""Every ```python block in README.md runs, in order, in one namespace (examples cannot rot).

Blocks that read files run in a temporary folder holding copies of the shared real data under
the names the README uses; they are left out (the others still run) when it is absent."""
import re
import shutil
from pathlib import Path

from .shared import DATA

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
FILES = {  # name in the README -> shared data file
    "subject01_simbody.osim": "opensim-gait2392/subject01_simbody.osim",
    "subject01_Setup_IK.xml": "opensim-gait2392/subject01_Setup_IK.xml",
    "subject01_walk1.trc": "opensim-gait2392/subject01_walk1.trc",
    "opensim46_walk1_ik.mot": "opensim-gait2392/opensim46_walk1_ik.mot",
    "walk.c3d": "c3d/btk/PiG_Motion3_FF.c3d",
}


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    assert len(BLOCKS) >= 5
    monkeypatch.chdir(tmp_path)
    have_data = all((DATA / rel).exists() for rel in FILES.values())
    if have_data:
        for name, rel in FILES.items():
            shutil.copy(DATA / rel, tmp_path / name)
    ns: dict = {}
    ran = 0
    for i, block in enumerate(BLOCKS):
        if any(name in block for name in FILES) and not have_data:
            continue
        exec(compile(block, f"README python block {i}", "exec"), ns)
        ran += 1
    assert ran >= len(BLOCKS) - 2
    if have_data:
        assert (tmp_path / "walk1_kinfunc.mot").exists()
        assert float(ns["deg"].max()) < 0.5  # the README's claim: angles match OpenSim
        assert ns["trial"].meta["lab_to_model"] is not None
