"""compile_fk warm-up and throughput, each configuration in a fresh process with an empty
inductor cache (cold) -- the numbers behind issue 14's target (>= 10 M frames/s at batch 100k,
float32, 2 threads, lower body, cold warm-up <= 20 s).

``python -m bench.bench_compile [--label after] [--configs default,static] [--reps 15]``
from the repository root. Merges its rows into ``bench/results/compile_fk.json`` under
``--label`` (keeping other labels, e.g. the "before" run). Per configuration: ``warmup_s``
(the first call in the process, i.e. trace + compile + run), ``warm_cache_s`` (the first
call of a second fresh process that shares the first one's on-disk cache), ``M_frames_per_s``
(median of ``--reps`` calls), the best call and the load average at the time.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "compile_fk.json"

# name -> (compile_fk kwargs, call): call is how the timed function is invoked
CONFIGS = {
    "default": ({}, "poses"),
    "static": ({"dynamic": False}, "poses"),
    "dynamic": ({"dynamic": True}, "poses"),
    "default_frames_last": ({}, "frames_last"),
    "default_markers": ({}, "markers"),
}

CHILD = r"""
import json, statistics, sys, time, torch
import kinfunc as kf
torch.set_num_threads(int(sys.argv[3]))
kw, call, reps, n = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[4]), int(sys.argv[5])
model = kf.models.lower_body(dtype=torch.float32)
g = torch.Generator().manual_seed(0)
q = model.default_q() + 0.3 * torch.randn(n, model.topology.n_coordinates, generator=g)
fast = kf.compile_fk(model, **kw)
f = {"poses": lambda: fast(q), "frames_last": lambda: fast.frames_last(q), "markers": lambda: fast.markers(q)}[call]
with torch.no_grad():
    t0 = time.perf_counter(); out = f(); warm = time.perf_counter() - t0
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    # correctness of the timed call itself (first 64 frames; no second compile for another size)
    ref = kf.fk(model, q[:64])
    if call == "poses":
        got, want = (out.R[:64], out.t[:64]), (ref.R, ref.t)
    elif call == "frames_last":
        got, want = (out[0][..., :64].permute(3, 0, 1, 2), out[1][..., :64].permute(2, 0, 1)), (ref.R, ref.t)
    else:
        got, want = (out[:64],), (kf.marker_positions(model, q[:64]),)
    err = max(float((a - b).abs().max()) for a, b in zip(got, want))
print(json.dumps({"warmup_s": warm, "median_s": statistics.median(ts), "best_s": min(ts), "max_abs_err_vs_fk": err}))
"""


def run_config(name: str, threads: int, reps: int, n: int) -> dict:
    kw, call = CONFIGS[name]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        args = [sys.executable, "-c", CHILD, json.dumps(kw), call, str(threads), str(reps), str(n)]
        load = os.getloadavg()[0]
        cold = json.loads(subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        warm = json.loads(subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    med = min(cold["median_s"], warm["median_s"])  # the less disturbed of the two processes
    row = {
        "kwargs": kw, "call": call, "batch": n, "threads": threads,
        "warmup_s": round(cold["warmup_s"], 2), "warm_cache_s": round(warm["warmup_s"], 2),
        "M_frames_per_s": round(n / med / 1e6, 2), "best_M_frames_per_s": round(n / min(cold["best_s"], warm["best_s"]) / 1e6, 2),
        "max_abs_err_vs_fk": cold["max_abs_err_vs_fk"], "loadavg_1min": round(load, 2),
    }
    print(f"{name:22s} {row}", flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.bench_compile", description=__doc__)
    ap.add_argument("--label", default="after")
    ap.add_argument("--configs", default="default,static")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    rows = {c: run_config(c, a.threads, a.reps, a.batch) for c in a.configs.split(",")}
    if a.no_write:
        return
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    import torch

    res.setdefault("runs", {})[a.label] = {
        "when": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__, "cores": os.cpu_count(), "model": "lower_body(cmu), float32", "configs": rows,
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
