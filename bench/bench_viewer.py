"""Size and load time of the report's 3-D viewer for a 5000-frame full-body trial.

    python -m bench.bench_viewer            # writes bench/results/viewer.json

The trial is the synthetic one of tests/test_viewer.py (full-body model, 41 CMU markers,
a displaced marker and a run of doubtful frames). Load time: ``kfViewer.readyMs``, from
navigation start to the data decoded and the first frame and curves drawn, in headless
Chromium (playwright driving /usr/bin/chromium). The test's budget is 2 s.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import kinfunc as kf
from kinfunc import viewer

OUT = Path(__file__).resolve().parent / "results" / "viewer.json"


def main(runs: int = 5) -> dict:
    from playwright.sync_api import sync_playwright

    from tests.test_viewer import synthetic_result

    model = kf.models.full_body("cmu", dtype=torch.float64)
    res, tr = synthetic_result(model, 5000, displaced=(2000, 2040), bad_frames=(3000, 3010))
    tmp = Path(tempfile.mkdtemp())
    build = []
    for _ in range(runs):
        t = time.perf_counter()
        page = viewer.write_viewer(tmp / "long.html", model, res, tr)
        build.append(time.perf_counter() - t)
    ready, wall = [], []
    with sync_playwright() as pw:
        exe = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
        b = pw.chromium.launch(**({"executable_path": exe} if exe else {}))
        version = b.version
        for _ in range(runs):
            p = b.new_page(viewport={"width": 1100, "height": 900})
            t = time.perf_counter()
            p.goto(page.resolve().as_uri())
            p.wait_for_function("window.kfViewer && window.kfViewer.ready")
            wall.append((time.perf_counter() - t) * 1e3)
            ready.append(p.evaluate("kfViewer.readyMs"))
            p.close()
        b.close()
    out = {
        "what": "kinfunc.viewer.write_viewer, 5000-frame full-body trial (41 markers, 40 coordinates), 1000 frames shown",
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg()[0],
        "chromium": version, "torch": torch.__version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "page_bytes": page.stat().st_size,
        "build_s_median": statistics.median(build),
        "ready_ms": ready, "ready_ms_median": statistics.median(ready),
        "goto_to_ready_wall_ms": wall, "budget_ms": 2000,
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
