"""Batch IK: one function per trial (:func:`ik_trial`), many trials in parallel processes.

:func:`ik_trial` is a plain picklable function of paths and options that returns a summary
row (a dict); :func:`run_batch` maps it over trials with ``concurrent.futures`` and writes a
summary CSV. The same function runs on a cluster through any executor with a ``submit``/``map``
interface (Ray, Dask): see ``docs/cli.md``.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import glob
import os
import sys
import time as _time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

__all__ = ["expand_trials", "ik_trial", "run_batch", "SUMMARY_FIELDS"]

SUMMARY_FIELDS = ("trial", "status", "frames", "markers", "mean_rms_mm", "max_mm", "iterations", "converged",
                  "doubtful_frames", "doubtful_markers", "marker_issues", "wall_s", "motion", "error")


def expand_trials(spec: str) -> list[Path]:
    """Trial files named by ``spec``: a file, a folder (its ``.trc``/``.c3d`` files, sorted) or a glob."""
    p = Path(spec)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix.lower() in (".trc", ".c3d"))
    if p.exists():
        return [p]
    hits = sorted(Path(h) for h in glob.glob(spec, recursive=True))
    return [h for h in hits if h.suffix.lower() in (".trc", ".c3d")]


def ik_trial(trial_path: str, out_dir: str, options: dict) -> dict:
    """Run the ``kinfunc ik`` pipeline on one trial; never raises: failures come back as a row
    with ``status="error"`` and the one-line cause. ``options`` are the CLI's (model, setup,
    fit, static, up/forward/auto_orient, dtype, device, report)."""
    from .pipeline import run_ik_pipeline

    t0 = _time.perf_counter()
    row = {k: "" for k in SUMMARY_FIELDS}
    row["trial"] = str(trial_path)
    try:
        import torch

        res, files = run_ik_pipeline(trial_path, out_dir=out_dir, log=lambda s: None, **options)
        rms = res.marker_rms[torch.isfinite(res.marker_rms)]
        mx = res.marker_max[torch.isfinite(res.marker_max)]
        row.update(status="ok", frames=res.q.shape[0], markers=len(res.marker_names),
                   mean_rms_mm=f"{1e3 * float(rms.mean()):.3f}", max_mm=f"{1e3 * float(mx.max()):.3f}",
                   iterations=res.iterations, converged=res.converged, motion=str(files.get("motion", "")),
                   doubtful_frames=int(res.frame_flags.sum()), doubtful_markers=int(res.marker_flags.sum()),
                   marker_issues=len(res.quality.issues))
    except Exception as e:  # reported in the row, the batch goes on
        row.update(status="error", error=f"{type(e).__name__}: {e}".splitlines()[0])
        if os.environ.get("KINFUNC_DEBUG"):
            traceback.print_exc()
    row["wall_s"] = f"{_time.perf_counter() - t0:.3f}"
    return row


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_batch(trials: Sequence[Path], out_dir: Path, options: dict, jobs: int = 1,
              log: Optional[Callable[[str], None]] = None) -> list[dict]:
    """IK on every trial (each into ``out_dir/<trial stem>/``), ``jobs`` processes at once;
    writes ``out_dir/summary.csv`` and returns its rows (in ``trials`` order)."""
    say = log or (lambda s: print(s, file=sys.stderr))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems: dict[str, int] = {}
    dirs = []
    for t in trials:
        s = Path(t).stem
        stems[s] = stems.get(s, 0) + 1
        dirs.append(out_dir / (s if stems[s] == 1 else f"{s}_{stems[s]}"))
    rows: list[Any] = [None] * len(trials)
    if jobs <= 1:
        for i, (t, d) in enumerate(zip(trials, dirs)):
            rows[i] = ik_trial(str(t), str(d), options)
            say(f"[{i + 1}/{len(trials)}] {t}: {rows[i]['status']} {rows[i]['mean_rms_mm'] or rows[i]['error']}")
    else:
        import torch

        with cf.ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                                    initargs=(torch.get_num_threads(),)) as ex:
            futs = {ex.submit(ik_trial, str(t), str(d), options): i for i, (t, d) in enumerate(zip(trials, dirs))}
            for n, f in enumerate(cf.as_completed(futs), 1):
                i = futs[f]
                rows[i] = f.result()
                say(f"[{n}/{len(trials)}] {trials[i]}: {rows[i]['status']} {rows[i]['mean_rms_mm'] or rows[i]['error']}")
    with open(out_dir / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return rows
