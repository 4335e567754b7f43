"""kinfunc.retain_freed_memory: freed working memory is reused instead of refaulted (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import kinfunc as kf

SCRIPT = """
import resource, sys, torch
import kinfunc as kf
applied = kf.allocator.retain_freed_memory() if sys.argv[1] == "1" else None
def round_trip():  # what an IK iteration does: many arrays of a few hundred KiB, then all freed
    xs = [torch.ones(50_000, dtype=torch.float64) for _ in range(40)]
    return sum(float(x[-1]) for x in xs)
round_trip()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    round_trip()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(retain: bool) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, "1" if retain else "0"], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retain_freed_memory_stops_refaulting():
    applied, tuned = _faults(True)
    _, default = _faults(False)
    assert applied == "True"
    # default glibc: the ~16 MB freed each round may go back to the OS and fault back in (how much
    # depends on glibc's dynamic thresholds and transparent huge pages on the machine)
    if default < 1000:
        pytest.skip(f"glibc's defaults do not refault here ({default} faults in 20 rounds): nothing to compare")
    assert tuned < default / 4


def test_retain_freed_memory_refuses_nonsense():
    assert kf.allocator.retain_freed_memory(0) is False
