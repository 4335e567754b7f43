"""Whole-trial IK on OpenSim's examples: kinfunc vs OpenSim 4.6's ``InverseKinematicsTool``, same run.

Usage::

    python bench/bench_ik.py [--repeats 10] [--kf-repeats 40] [--threads 1] [--dtypes float64 float32]
                             [--default-allocator] [--out bench/results/ik.json]

Cases: Gait2392 (``subject01_simbody.osim``, 23 coordinates, 121 frames) and Gait10dof
(``subject01.osim``, 10 coordinates, 151 frames) from the shared data, with their IK setup files
(marker weights, coordinate tasks, time range). For each: kinfunc's ``kf.ik.solve`` in each of
``--dtypes``, timed cold (first call of the process for that model and dtype: includes
first-call overheads) and warm (median of ``--kf-repeats`` further calls: a solve takes tens of
milliseconds, so a Python garbage-collector pass or a burst of page faults moves a median of 5
by 20-40 %), and OpenSim's IK tool (setup file, outputs to a temporary folder; ``tool.run()``
timed, median of ``--repeats``; OpenSim's own timing of its frame loop, which excludes its model
set-up, is read from its log (ms, or whole s above 1 s), captured while it runs). The timed runs
are interleaved - one OpenSim run, then its share of kinfunc solves, ``--repeats`` times - so
that both engines see the same machine: wall times on a shared VM drift by 30 % within minutes.
Besides the ratio of the medians, each round's ratio (its OpenSim run over the median of its
kinfunc solves) is recorded, with their median.
Both results are scored with the same objective (:func:`kinfunc.ik.setup_objective`) and mean
marker RMS. torch threads ``--threads`` (OpenSim's IK is single-threaded). The process runs with
:func:`kinfunc.retain_freed_memory` (both engines; ``--default-allocator`` to leave glibc's
defaults). Prints a table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import kinfunc as kf
from kinfunc.io import load_ik_setup, load_osim, load_trc, read_mot

DATA = Path(os.environ.get("KINFUNC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CASES = {
    "gait2392": ("opensim-gait2392", "subject01_simbody.osim", "subject01_Setup_IK.xml", "subject01_walk1.trc"),
    "gait10dof": ("opensim-gait10dof", "subject01.osim", "walk_Setup_IK.xml", "subject01_walk.trc"),
}


def _opensim_loop_s(text):
    """OpenSim's own timing of its frame loop, from its log: ``completed N frames in X millisecond(s)``."""
    hits = re.findall(r"completed (\d+) frames in (\d+) (millisecond|second)", text)
    if not hits:
        return None
    return float(hits[-1][1]) / (1e3 if hits[-1][2] == "millisecond" else 1.0)


def _run_capturing(fn):
    """Call ``fn()`` with the process's stdout/stderr (where OpenSim's C++ logger writes) sent to a
    temporary file; returns ``(fn's value, the captured text)``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            value = fn()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        f.seek(0)
        return value, f.read().decode(errors="replace")


def run_opensim_once(osim, folder, model_file, setup_file, trc):
    """One OpenSim IK run: ``(run() wall s, its logged frame-loop s, .mot path, marker-error .sto path)``."""
    tmp = tempfile.mkdtemp(prefix="kf_bench_ik_")
    tool = osim.InverseKinematicsTool(str(folder / setup_file))
    model = osim.Model(str(folder / model_file))  # keep a reference: the tool does not own it
    tool.setModel(model)
    tool.setMarkerDataFileName(str(folder / trc))
    tool.set_results_directory(tmp)
    mot = os.path.join(tmp, "ik.mot")
    tool.setOutputMotionFileName(mot)
    t0 = time.perf_counter()
    ok, log = _run_capturing(tool.run)
    wall = time.perf_counter() - t0
    if not ok:
        raise RuntimeError("OpenSim IK failed")
    errs = [f for f in os.listdir(tmp) if f.endswith("marker_errors.sto")]
    return wall, _opensim_loop_s(log), mot, os.path.join(tmp, errs[0]) if errs else None


def case(name, args, osim):
    """One case. Timed rounds interleave the engines (one OpenSim run, then ``--kf-repeats /
    --repeats`` kinfunc solves per dtype) so that both see the same state of the machine."""
    folder, model_file, setup_file, trc = CASES[name]
    folder = DATA / folder
    setup = load_ik_setup(folder / setup_file)
    trial = load_trc(folder / trc)
    m64 = load_osim(folder / model_file)
    out = {"frames": None, "coordinates": m64.topology.n_coordinates, "kinfunc": {}}
    models = {d: load_osim(folder / model_file, dtype=getattr(torch, d)) for d in args.dtypes}
    # one model solved many times: its kinematics prepared once and passed to every solve, as a
    # user solving many trials with one model does (kf.ik.prepare; preparing is part of the cold call)
    kin = {}

    def solve(d):
        if d not in kin:
            kin[d] = kf.ik.prepare(models[d], dtype=getattr(torch, d))
        return kf.ik.solve(models[d], trial, setup=setup, dtype=getattr(torch, d), kinematics=kin[d])

    cold, last, warm = {}, {}, {d: [] for d in args.dtypes}
    for d in args.dtypes:
        t0 = time.perf_counter()
        last[d] = solve(d)
        cold[d] = time.perf_counter() - t0
    times, loops, mot, sto = [], [], None, None
    per_round = max(1, round(args.kf_repeats / args.repeats))
    paired = {d: [] for d in args.dtypes}  # per round: OpenSim's run() / median kinfunc solve of that round
    for _ in range(args.repeats):
        if osim is not None:
            wall, loop, mot, sto = run_opensim_once(osim, folder, model_file, setup_file, trc)
            times.append(wall)
            loops.append(loop)
        for d in args.dtypes:
            rnd = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                last[d] = solve(d)
                rnd.append(time.perf_counter() - t0)
            warm[d] += rnd
            if osim is not None:
                paired[d].append(times[-1] / statistics.median(rnd))
    for d in args.dtypes:
        res = last[d]
        out["frames"] = int(res.q.shape[0])
        out["markers_used"] = len(res.marker_names)
        out["kinfunc"][d] = {
            "cold_s": cold[d],
            "warm_s_median": statistics.median(warm[d]),
            "warm_s_all": warm[d],
            "iterations": res.iterations,
            "objective": kf.ik.setup_objective(m64, setup, trial, res.time.double(), res.q.to(torch.float64)),
            "mean_marker_rms_mm": 1e3 * float(res.marker_rms.double().nanmean()),
        }
    if osim is not None:
        q_os = read_mot(mot, model=m64)
        o = {
            "run_s_median": statistics.median(times),
            "run_s_all": times,
            "frame_loop_s_median": statistics.median(loops) if None not in loops else None,
            "frame_loop_s_all": loops,
            "objective": kf.ik.setup_objective(m64, setup, trial, q_os.time, q_os.q_for(m64)),
        }
        if sto:
            e = read_mot(sto)
            o["mean_marker_rms_mm"] = 1e3 * float(e.values[:, e.names.index("marker_error_RMS")].mean())
        out["opensim"] = o
        for dname, k in out["kinfunc"].items():
            k["speedup_warm"] = o["run_s_median"] / k["warm_s_median"]
            k["speedup_paired_rounds"] = paired[dname]
            k["speedup_paired_median"] = statistics.median(paired[dname])
            k["speedup_cold"] = o["run_s_median"] / k["cold_s"]
            if o["frame_loop_s_median"]:
                k["speedup_warm_vs_opensim_frame_loop"] = o["frame_loop_s_median"] / k["warm_s_median"]
            k["objective_rel_diff_vs_opensim"] = (k["objective"] - o["objective"]) / o["objective"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10, help="timed OpenSim runs (rounds)")
    ap.add_argument("--kf-repeats", type=int, default=40, help="timed warm kinfunc solves (spread over the rounds)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", nargs="*", default=["float64", "float32"], choices=("float64", "float32"))
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--no-opensim", action="store_true")
    ap.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc malloc at its defaults (else kinfunc.retain_freed_memory() for the whole process, both engines)",
    )
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "ik.json"))
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"shared data not found at {DATA} (set KINFUNC_SHARED_DATA)")
    torch.set_num_threads(args.threads)
    retained = False if args.default_allocator else kf.allocator.retain_freed_memory()
    osim = None
    if not args.no_opensim:
        try:
            import opensim as osim

            # no opensim.log file: OpenSim's default file sink writes into whatever directory is
            # current at its first message (the tool changes into the setup file's folder)
            osim.Logger.removeFileSink()
            # info level: OpenSim logs its own frame-loop time, read back from the captured output
            osim.Logger.setLevelString("info")
        except ImportError:
            print("opensim not installed: timing kinfunc only", file=sys.stderr)
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "opensim_repeats": args.repeats,
            "kinfunc_warm_repeats": max(1, round(args.kf_repeats / args.repeats)) * args.repeats,
            "retain_freed_memory": retained,
            "opensim": getattr(osim, "__version__", None) if osim else None,
        },
        "cases": {n: case(n, args, osim) for n in args.cases},
    }
    for n, r in results["cases"].items():
        o = r.get("opensim")
        if o:
            print(f"{n:10s} {r['frames']} frames  OpenSim IK tool: run() {o['run_s_median']:.3f} s (its frame loop {o['frame_loop_s_median'] or float('nan'):.3f} s), RMS {o.get('mean_marker_rms_mm', float('nan')):.3f} mm, objective {o['objective']:.7f}")
        for dname, k in r["kinfunc"].items():
            line = f"{n:10s} {r['frames']} frames  kinfunc {dname}: cold {k['cold_s']:.3f} s, warm {k['warm_s_median']:.3f} s ({k['iterations']} it), RMS {k['mean_marker_rms_mm']:.3f} mm, objective {k['objective']:.7f}"
            if o:
                line += (
                    f"  -> {k['speedup_warm']:.1f}x warm ({k['speedup_paired_median']:.1f}x median of per-round ratios), "
                    f"{k['speedup_cold']:.1f}x cold vs run(); {k.get('speedup_warm_vs_opensim_frame_loop', float('nan')):.1f}x warm vs its frame loop"
                )
            print(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
