"""Every ```python block in README.md runs (examples cannot rot)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_python_block_runs(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for prev in BLOCKS[:i]:  # later blocks may use names from earlier ones
        exec(compile(prev, f"README block {BLOCKS.index(prev)}", "exec"), ns)
    exec(compile(BLOCKS[i], f"README block {i}", "exec"), ns)
