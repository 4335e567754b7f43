"""Process-wide CPU allocator setting for many short solves (Linux with glibc only).

glibc's ``malloc`` hands freed memory at the top of its heap back to the operating system once
more than a threshold is free (128 KiB at start, raised automatically to twice the largest
``mmap``-served block freed so far) and serves large requests with fresh ``mmap`` pages. A
whole-trial IK solve creates and frees arrays of a few hundred KiB a few hundred times, so with
the defaults its working memory is returned and faulted back in on every iteration: about 2000
page faults per 150-frame Gait10dof solve, 10-25 % of its time on a small VM.

:func:`retain_freed_memory` fixes both thresholds so freed memory stays in the process for
reuse. It affects every allocation of the whole process, so importing kinfunc never calls it;
the ``kinfunc`` command and the benchmarks do (the IK benchmark runs OpenSim in the same
process, so both engines get the same allocator), and a script may.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems


def retain_freed_memory(keep_mib: int = 64) -> bool:
    """Keep up to ``keep_mib`` MiB of freed heap memory in this process (``M_TRIM_THRESHOLD``)
    and serve blocks up to 32 MiB from the heap (``M_MMAP_THRESHOLD``).

    Returns ``True`` when applied, ``False`` where it cannot be (not Linux, or a C library
    without ``mallopt`` such as musl). The process then holds up to ``keep_mib`` MiB more memory
    than it uses."""
    if not sys.platform.startswith("linux") or keep_mib <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_TRIM_THRESHOLD, int(keep_mib) << 20)) and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX))
