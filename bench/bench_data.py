"""Load times of the marker-data layer on the shared sample files (medians of 5 runs).

    python bench/bench_data.py [--data /work/shared/data] [--out bench/results/data_load.json]

Measures load_c3d with each backend (ezc3d in process, built-in numpy decoder, ezc3d probed in
a child process first = ``isolate=True``), the pure-Python validation alone, and load_trc.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import kinfunc as kf
from kinfunc.io import _c3dformat
from kinfunc.io._markerio import Report


def med(fn, n=5):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "data_load.json"))
    a = ap.parse_args()
    data = Path(a.data)
    warnings.simplefilter("ignore")
    rows = []
    for f in ["c3d/opensim-core/walking2.c3d", "c3d/kineticstoolkit/walk.c3d", "c3d/btk/PiG_Motion3_FF.c3d",
              "c3d/btk/sample02_pc_real.c3d", "c3d/btk/Eb015sr.c3d"]:
        p = data / f
        buf = p.read_bytes()
        r = {"file": f, "bytes": len(buf)}
        r["validate_ms"] = med(lambda: _c3dformat.read_structure(buf, Report(str(p))))
        r["python_ms"] = med(lambda: kf.io.load_c3d(p, backend="python"))
        if "Eb015s" not in f:
            r["ezc3d_ms"] = med(lambda: kf.io.load_c3d(p, backend="ezc3d"))
            r["ezc3d_isolated_ms"] = med(lambda: kf.io.load_c3d(p, backend="ezc3d", isolate=True), n=3)
        rows.append(r)
    for f in ["trc/opensim-core/dataWithNaNsWithSpaces.trc", "opensim-gait2392/subject01_walk1.trc",
              "c3d/opensim-core/walking2_expected_markers.trc"]:
        p = data / f
        rows.append({"file": f, "bytes": p.stat().st_size, "load_trc_ms": med(lambda: kf.io.load_trc(p))})
    out = {"machine": platform.platform(), "python": platform.python_version(), "results": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    for r in rows:
        print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
