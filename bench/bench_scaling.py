"""Automatic scaling (scales + marker offsets + poses) from a generic model, on known truth.

Usage::

    python bench/bench_scaling.py [--threads 2] [--omp-active] [--no-ab] [--frames 1000]
                                  [--out bench/results/scaling.json]

Data: ``shared/data/arnold2013synthetic`` (see ``shared/data/MANIFEST.md``): the generic
``unscaled_generic.osim``, per subject the true scaled model ``subjectNN.osim``, the walking
markers ``markers.trc`` (made from the true model, 200 Hz, m) and the true ``coordinates.sto``
(radians / metres). The true models carry OpenSim's scaling baked into joint locations and
marker offsets; their effective per-axis scales (what a perfect fit would find) are recovered
here from the joint locations and the offsets of the anatomical (``fixed``) markers, exactly.

Coordinates are compared over the columns of ``coordinates.sto`` that the model has (30
rotational + 3 pelvis translations; the generic model's wrist coordinates are not in the file).
``mtp_angle_*`` is reported but kept apart: the true models weld the toes (no mtp coordinate),
the generic model locks it at 0, so the markers carry nothing about the file's mtp values.
"mean" = mean per-coordinate RMS over the 30 rotational coordinates, "mean_nomtp" over the 28
without mtp. Markers ending in ``JC`` are virtual joint centres computed from the true model;
a real pipeline would not have them, so every generic-model case is run without them ("noJC",
the realistic one) and with them ("JC").

Cases per subject:

* ``a_true_pose``: true model, pose only (must give <= 0.05 deg); ``a_true_pose_noisy``: the same
  on markers with added noise (2 mm white per axis + a 4 mm soft-tissue-like sinusoid per marker,
  seeded): the floor any scaling can reach on that noisy trial.
* ``b_default``: ``kf.ik.solve(generic, trial, fit=("pose", "segment_scales", "marker_offsets"))``
  with the library's defaults.
* ``c_recipe``: ``kinfunc.ik.scaling.scale_subject`` (per-axis, left = right scales,
  scale priors by how many markers a body carries, anatomical markers held, shape fit on <= 300
  frames, then a pose-only solve of every frame started from the shape fit's poses interpolated
  in time); also on the noisy trial.
* ablations (subject01): single options changed from the recipe.

Timing case ("static + several trials of a few thousand frames"): a 150-frame static made from
the true subject01 model standing (0.5 mm noise) + 3 walking trials of ``--frames`` frames each
(subject01's markers tiled forwards/backwards in time, 1 mm noise each, own seeds), no JC
markers. Timed: the library's defaults in one call, one call with the recipe's options, and the
recipe (staged; its last stage started by the segment sweep, and, the recipe's default, from the
shape fit's poses interpolated in time), each with a stage breakdown (the ``kinfunc.ik.solve`` module's functions
wrapped with timers for the run) and a cProfile of the call.

Threads: ``torch.set_num_threads(--threads)``. Unless ``--omp-active``, ``OMP_WAIT_POLICY=PASSIVE``
is set before torch loads: on this shared 2-core VM (other jobs running), GNU OpenMP's default
spin-waiting makes every one of the thousands of small parallel ops in a solve wait for a
descheduled thread (measured: the same pose-only solve 2 s with 1 thread, 2.3 s with 2 threads
passive, 15-40 s with 2 threads active). ``--no-ab`` skips that A/B measurement (subprocesses).
The 1-minute load average is recorded around every timed case.
"""
from __future__ import annotations

import argparse
import os
import sys

_ap = argparse.ArgumentParser()
_ap.add_argument("--threads", type=int, default=2)
_ap.add_argument("--omp-active", action="store_true", help="leave OMP_WAIT_POLICY alone (OpenMP spins)")
_ap.add_argument("--no-ab", action="store_true", help="skip the threads / wait-policy A/B subprocesses")
_ap.add_argument("--frames", type=int, default=1000, help="frames per walking trial in the timing case")
_ap.add_argument("--data", default=None)
_ap.add_argument("--out", default=None)
ARGS = _ap.parse_args() if __name__ == "__main__" else _ap.parse_args([])
if not ARGS.omp_active:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cProfile  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import kinfunc as kf  # noqa: E402
from kinfunc.ik.scaling import scale_subject, scale_prior_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(ARGS.data) if ARGS.data else ROOT.parents[0] / "shared" / "data" / "arnold2013synthetic"
if not DATA.exists():
    DATA = Path("/work/shared/data/arnold2013synthetic")
OUT = Path(ARGS.out) if ARGS.out else ROOT / "bench" / "results" / "scaling.json"
SUBJECTS = ("subject01", "subject02")
FIT = ("pose", "segment_scales", "marker_offsets")
TRANS = ("pelvis_tx", "pelvis_ty", "pelvis_tz")
DEG = 180.0 / math.pi
SOLVE_MOD = sys.modules["kinfunc.ik.solve"]  # the module (kinfunc.ik.solve is also the function)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


# ------------------------------------------------------------------------------------ data
def load_generic():
    return kf.io.load_osim(DATA / "unscaled_generic.osim", dtype=torch.float64)


def load_true(s):
    return kf.io.load_osim(DATA / s / f"{s}.osim", dtype=torch.float64)


def load_trial(s, jc: bool):
    tr = kf.io.load_trc(DATA / s / "markers.trc")
    return tr if jc else tr.select([n for n in tr.names if not n.endswith("JC")])


def truth(s):
    return kf.io.read_mot(DATA / s / "coordinates.sto")  # radians / metres (MANIFEST)


def noisy(tr, white=0.002, sta=0.004, seed=0):
    """``white`` m Gaussian per axis + per marker a smooth soft-tissue-like displacement (two
    harmonics of 0.9 Hz, ``sta`` and ``sta/2`` m per axis, random phases)."""
    g = torch.Generator().manual_seed(seed)
    T, M, _ = tr.xyz.shape
    t = (tr.time - tr.time[0]).to(torch.float64)
    x = tr.xyz + white * torch.randn(tr.xyz.shape, generator=g, dtype=torch.float64)
    for k, sd in ((1, sta), (2, sta / 2)):
        A = sd * torch.randn(M, 3, generator=g, dtype=torch.float64)
        ph = 2 * math.pi * torch.rand(M, 3, generator=g, dtype=torch.float64)
        x = x + A * torch.sin(2 * math.pi * k * 0.9 * t[:, None, None] + ph)
    return dataclasses.replace(tr, xyz=x)


def true_scales(gen, tru):
    """Effective per-axis scale of every body of the true model relative to the generic one:
    least squares over the body's vectors (its children's joint locations, its anatomical
    markers' offsets); ``resid_mm`` 0 means an exact per-axis scaling."""
    out = {}
    for bi, b in enumerate(gen.body_names):
        vg, vt = [], []
        for ci, p in enumerate(gen.topology.parents):
            if p == bi and gen.body_names[ci] in tru.body_names:
                vg.append(gen.parent_location[ci])
                vt.append(tru.parent_location[tru.body_names.index(gen.body_names[ci])])
        for mi, m in enumerate(gen.marker_names):
            if gen.topology.marker_bodies[mi] == bi and gen.topology.marker_fixed[mi] and m in tru.marker_names:
                vg.append(gen.marker_offsets[mi])
                vt.append(tru.marker_offsets[tru.marker_names.index(m)])
        if vg:
            G, Tt = torch.stack(vg), torch.stack(vt)
            seen = (G * G).sum(0) > 1e-10
            s = torch.where(seen, (G * Tt).sum(0) / (G * G).sum(0).clamp_min(1e-12), torch.full((3,), math.nan))
            out[b] = s
    return out


# ------------------------------------------------------------------------------------ metrics
def coordinate_metrics(model, q, ref, frames=None):
    per = {}
    for i, n in enumerate(model.coordinate_names):
        if n not in ref.names:
            continue
        r = ref.column(n).to(q)
        if frames is not None:
            r = r[frames]
        d = q[:, i] - r
        per[n] = float(d.square().mean().sqrt()) * (1000.0 if n in TRANS else DEG)
    rot = {k: v for k, v in per.items() if k not in TRANS}
    nm = {k: v for k, v in rot.items() if "mtp" not in k}
    w, wn = max(rot, key=rot.get), max(nm, key=nm.get)
    return {
        "mean_deg": sum(rot.values()) / len(rot),
        "mean_nomtp_deg": sum(nm.values()) / len(nm),
        "median_deg": sorted(rot.values())[len(rot) // 2],
        "worst": [w, rot[w]],
        "worst_nomtp": [wn, nm[wn]],
        "n_nomtp_over_5deg": sum(v > 5.0 for v in nm.values()),
        "pelvis_translation_mm": [per[k] for k in TRANS],
        "per_coordinate": per,
    }


def scale_errors(fitted, ts):
    """Mean / max |fitted - true| per-axis scale over the bodies and axes the truth defines."""
    errs = []
    for b, s in ts.items():
        i = fitted.body_names.index(b)
        f = (fitted.global_scale * fitted.body_scales[i]).to(torch.float64)
        ok = torch.isfinite(s)
        errs += (f[ok] - s[ok]).abs().tolist()
    return {"scale_abs_err_mean": sum(errs) / len(errs), "scale_abs_err_max": max(errs)}


def marker_rms_mm(results):
    v = torch.cat([r.marker_rms for r in results])
    return 1e3 * float(v[torch.isfinite(v)].mean())


# ------------------------------------------------------------------------------------ timers
class StageTimer:
    """Wraps the ``kinfunc.ik.solve`` module's stage functions with wall-clock timers while active."""

    NAMES = ("build_problem", "segment_start", "initial_q", "solve_gn", "repair", "frame_costs", "_results")

    def __init__(self):
        self.rows = []
        self._saved = {}

    def __enter__(self):
        for n in self.NAMES:
            f = getattr(SOLVE_MOD, n, None)
            if f is None:
                continue
            self._saved[n] = f

            def wrapped(*a, __f=f, __n=n, **k):
                t = time.perf_counter()
                out = __f(*a, **k)
                row = {"stage": __n, "s": time.perf_counter() - t}
                if __n == "solve_gn":
                    row.update(frames=int(a[0].n_frames), shared_params=int(a[0].n_theta),
                               smooth=bool(a[0].smooth_sqrt_w > 0), iterations=int(out.iterations))
                if __n == "segment_start":
                    row.update(frames=int(a[1].shape[0]))
                self.rows.append(row)
                return out

            setattr(SOLVE_MOD, n, wrapped)
        return self

    def __exit__(self, *exc):
        for n, f in self._saved.items():
            setattr(SOLVE_MOD, n, f)


def profile_rows(pr, total, n=14):
    st = pstats.Stats(pr)
    rows_cum, rows_tot = [], []
    for (file, line, fn), (cc, nc, tt, ct, callers) in st.stats.items():
        name = f"{Path(file).name}:{fn}" if file != "~" else fn
        if "kinfunc" in file:
            rows_cum.append((ct, name, nc))
        rows_tot.append((tt, name, nc))
    rows_cum.sort(reverse=True)
    rows_tot.sort(reverse=True)
    pick = lambda rows: [{"function": nm, "s": round(t, 3), "share": round(t / total, 3), "calls": c} for t, nm, c in rows[:n]]  # noqa: E731
    return {"cumulative_kinfunc": pick(rows_cum), "self_time": pick(rows_tot)}


# ------------------------------------------------------------------------------------ cases
def run_case(name, fn):
    la0 = load1()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    return out, {"case": name, "time_s": dt, "load1_before": la0, "load1_after": load1()}


def recipe_kwargs():
    """The recipe's options, as passed to scale_subject (its defaults, spelled out)."""
    return dict(scale_mode="per_axis", symmetric=True, shape_frames=300, offset_weight=1.0, pair_start=False,
                pose_start="interpolate")


def subject_cases(gen, s, rows, ablations):
    tru = load_true(s)
    ref = truth(s)
    ts = true_scales(gen, tru)
    seed = 1 if s == "subject01" else 11
    clean = {jc: load_trial(s, jc) for jc in (False, True)}
    noisy_tr = noisy(clean[False], seed=seed)

    def add(name, jc, results, meta, model_used, noise=False):
        q = results[0].q if isinstance(results, list) else results.q
        m = coordinate_metrics(model_used, q, ref)
        row = {"subject": s, "markers": "JC" if jc else "noJC", "noise": noise, **meta, **m,
               "marker_rms_mm": marker_rms_mm(results if isinstance(results, list) else [results])}
        fitted = (results[0] if isinstance(results, list) else results).model
        if model_used is gen:
            row.update(scale_errors(fitted, ts))
        row["case"] = name
        rows.append(row)
        print(f"  {s} {name:28s} {row['markers']:4s} {'noisy' if noise else 'clean':5s} "
              f"mean {m['mean_deg']:6.3f}  nomtp {m['mean_nomtp_deg']:6.3f}  worst {m['worst'][0]} {m['worst'][1]:.2f}  "
              f"worst non-mtp {m['worst_nomtp'][0]} {m['worst_nomtp'][1]:.2f}  {meta['time_s']:.2f} s", flush=True)

    r, meta = run_case("a_true_pose", lambda: kf.ik.solve(tru, clean[False]))
    add("a_true_pose", False, r, meta, tru)
    r, meta = run_case("a_true_pose_noisy", lambda: kf.ik.solve(tru, noisy_tr))
    add("a_true_pose_noisy", False, r, meta, tru, noise=True)
    for jc in (False, True):
        r, meta = run_case("b_default", lambda: kf.ik.solve(gen, clean[jc], fit=FIT))
        add("b_default", jc, r, meta, gen)
    r, meta = run_case("b_default", lambda: kf.ik.solve(gen, noisy_tr, fit=FIT))
    add("b_default", False, r, meta, gen, noise=True)
    for jc in (False, True):
        f, meta = run_case("c_recipe", lambda: scale_subject(gen, clean[jc], **recipe_kwargs()))
        meta["stages_s"] = f.times
        add("c_recipe", jc, f.results, meta, gen)
    f, meta = run_case("c_recipe", lambda: scale_subject(gen, noisy_tr, **recipe_kwargs()))
    meta["stages_s"] = f.times
    add("c_recipe", False, f.results, meta, gen, noise=True)
    if not ablations:
        return
    names = clean[False].names
    bymk = scale_prior_weights(gen, [m for m in gen.marker_names if m in names])
    abl = {
        "abl_per_axis_sym_sw1": dict(recipe_kwargs(), scale_weight=1.0),
        "abl_per_axis_sym_sw1e-3": dict(recipe_kwargs(), scale_weight=1e-3),
        "abl_per_axis_sym_sw1e-2": dict(recipe_kwargs(), scale_weight=1e-2),
        "abl_uniform_sym": dict(recipe_kwargs(), scale_mode="uniform"),
        "abl_per_axis_not_sym": dict(recipe_kwargs(), symmetric=False),
        "abl_pair_start": dict(recipe_kwargs(), pair_start=True, prior="generic"),
        "abl_pair_start_prior_pairs": dict(recipe_kwargs(), pair_start=True, prior="start"),
        "abl_offset_weight10": dict(recipe_kwargs(), offset_weight=10.0),
        "abl_shape_frames100": dict(recipe_kwargs(), shape_frames=100),
    }
    for name, kw in abl.items():
        for tr, noise in ((clean[False], False), (noisy_tr, True)):
            f, meta = run_case(name, lambda: scale_subject(gen, tr, **kw))
            meta["options"] = {k: v for k, v in kw.items()}
            add(name, False, f.results, meta, gen, noise=noise)
    # the recipe's options in one kf.ik.solve call (no staging): equal to the recipe on a short trial
    kw = dict(fit=FIT, scale_mode="per_axis", symmetric=True, scale_weight=bymk, shape_frames=300)
    r, meta = run_case("abl_one_call_recipe_options", lambda: kf.ik.solve(gen, clean[False], **kw))
    add("abl_one_call_recipe_options", False, r, meta, gen)


# ------------------------------------------------------------------------------------ timing case
def tile(tr, q, n, noise, seed):
    """``n`` frames: the trial forwards, backwards, forwards... (continuous), + ``noise`` m."""
    xs, qs, k, tot = [], [], 0, 0
    while tot < n:
        xs.append(tr.xyz if k % 2 == 0 else tr.xyz.flip(0))
        qs.append(q if k % 2 == 0 else q.flip(0))
        tot += tr.n_frames
        k += 1
    x = torch.cat(xs)[:n].clone()
    g = torch.Generator().manual_seed(seed)
    x = x + noise * torch.randn(x.shape, generator=g, dtype=x.dtype)
    t = torch.arange(n, dtype=tr.time.dtype) / tr.rate
    return dataclasses.replace(tr, xyz=x, time=t, source=f"tiled{seed}"), torch.cat(qs)[:n]


def timing_case(gen, out):
    s = "subject01"
    tru = load_true(s)
    ref = truth(s)
    walk = load_trial(s, False)
    names_ref = [n for n in gen.coordinate_names if n in ref.names]
    qref = torch.stack([ref.column(n) for n in names_ref], -1).to(torch.float64)
    trials, qtrue = [], []
    for k in range(3):
        tr, q = tile(walk, qref, ARGS.frames, 0.001, 100 + k)
        trials.append(tr)
        qtrue.append(q)
    q0 = tru.default_q().clone()
    q0[tru.coordinate_names.index("pelvis_ty")] = 0.95  # standing, feet near the floor
    xs = kf.marker_positions(tru, q0.expand(150, -1))[:, [tru.marker_names.index(n) for n in walk.names]]
    g = torch.Generator().manual_seed(99)
    static = dataclasses.replace(walk, xyz=xs + 0.0005 * torch.randn(xs.shape, generator=g, dtype=xs.dtype),
                                 time=torch.arange(150, dtype=torch.float64) / walk.rate, source="static")
    n_frames = 150 + sum(t.n_frames for t in trials)
    print(f"\ntiming case: static 150 + 3 x {ARGS.frames} walking frames = {n_frames} frames, "
          f"{walk.n_markers} markers, generic model ({len(gen.coordinate_names)} coordinates)", flush=True)

    class Ref:  # truth over the tiled frames, in the shape coordinate_metrics reads
        names = names_ref

        def __init__(self, q):
            self.q = q

        def column(self, n):
            return self.q[:, names_ref.index(n)]

    def evaluate(results):
        q = torch.cat([r.q for r in results[-3:]])
        return coordinate_metrics(gen, q, Ref(torch.cat(qtrue)))

    bymk = scale_prior_weights(gen, list(walk.names))
    variants = [
        ("default_one_call", lambda: kf.ik.solve(gen, [static] + trials, fit=FIT)),
        ("recipe_options_one_call", lambda: kf.ik.solve(gen, [static] + trials, fit=FIT, scale_mode="per_axis",
                                                        symmetric=True, scale_weight=bymk, shape_frames=300)),
        ("recipe_staged_segment_start", lambda: scale_subject(gen, trials, static=static,
                                                            **dict(recipe_kwargs(), pose_start="segments"))),
        ("recipe_staged", lambda: scale_subject(gen, trials, static=static, **recipe_kwargs())),
    ]
    out["timing"] = {"frames": n_frames, "markers": walk.n_markers, "cases": []}
    for name, fn in variants:
        pr = cProfile.Profile()
        with StageTimer() as st:
            la0 = load1()
            t = time.perf_counter()
            pr.enable()
            res = fn()
            pr.disable()
            dt = time.perf_counter() - t
        results = res.results if hasattr(res, "results") else res
        m = evaluate(results)
        row = {"case": name, "time_s": dt, "load1_before": la0, "load1_after": load1(),
               "stages": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in st.rows],
               "profile": profile_rows(pr, dt), "marker_rms_mm": marker_rms_mm(results[-3:]),
               **{k: v for k, v in m.items() if k != "per_coordinate"}}
        if hasattr(res, "times"):
            row["recipe_stages_s"] = res.times
        out["timing"]["cases"].append(row)
        print(f"  {name:26s} {dt:7.2f} s (load {la0} -> {row['load1_after']})  mean {m['mean_deg']:.3f}  "
              f"nomtp {m['mean_nomtp_deg']:.3f}  worst non-mtp {m['worst_nomtp'][0]} {m['worst_nomtp'][1]:.2f}", flush=True)
        for r in st.rows:
            extra = "".join(f" {k}={v}" for k, v in r.items() if k not in ("stage", "s"))
            print(f"      {r['stage']:14s} {r['s']:7.2f} s{extra}")
        for p in row["profile"]["self_time"][:8]:
            print(f"      self {p['function'][:52]:52s} {p['s']:7.2f} s  {100 * p['share']:5.1f} %  ({p['calls']} calls)")


AB_SNIPPET = r"""
import os, sys, time, dataclasses, torch, kinfunc as kf
torch.set_num_threads(int(sys.argv[1]))
D = sys.argv[2]
tru = kf.io.load_osim(D + "/subject01/subject01.osim", dtype=torch.float64)
tr = kf.io.load_trc(D + "/subject01/markers.trc")
x = torch.cat([tr.xyz, tr.xyz.flip(0)] * 4)
big = dataclasses.replace(tr, xyz=x, time=torch.arange(x.shape[0], dtype=torch.float64) / tr.rate)
kf.ik.solve(tru, tr)
t = time.perf_counter(); kf.ik.solve(tru, big); print(time.perf_counter() - t, x.shape[0])
"""


def threads_ab(out):
    """Pose-only solve of 1784 frames (true model), in fresh processes: 1 thread; 2 threads with
    OMP_WAIT_POLICY=PASSIVE; 2 threads with OpenMP's default (spinning)."""
    rows = []
    print("\nthreads A/B (pose-only, true model, 1784 frames, fresh process each):", flush=True)
    for threads, policy in ((1, None), (2, "PASSIVE"), (2, None)):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        la0 = load1()
        try:
            p = subprocess.run([sys.executable, "-c", AB_SNIPPET, str(threads), str(DATA)], env=env,
                               capture_output=True, text=True, timeout=90)
            line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
            t = float(line.split()[0]) if line else float("nan")
        except subprocess.TimeoutExpired:
            t = float("inf")
        row = {"threads": threads, "OMP_WAIT_POLICY": policy or "(default)", "solve_s": t, "load1_before": la0}
        rows.append(row)
        print(f"  threads {threads}  OMP_WAIT_POLICY={row['OMP_WAIT_POLICY']:9s}  {t:7.2f} s  (load {la0})", flush=True)
    out["threads_ab"] = rows


# ------------------------------------------------------------------------------------ main
def table(rows):
    print("\n| subject | case | markers | data | mean deg (30) | mean non-mtp (28) | worst | worst non-mtp | scale err mean/max | marker RMS mm | time s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        se = (f"{r['scale_abs_err_mean']:.3f}/{r['scale_abs_err_max']:.3f}" if "scale_abs_err_mean" in r else "-")
        print(f"| {r['subject']} | {r['case']} | {r['markers']} | {'noisy' if r['noise'] else 'clean'} | "
              f"{r['mean_deg']:.3f} | {r['mean_nomtp_deg']:.3f} | {r['worst'][0]} {r['worst'][1]:.2f} | "
              f"{r['worst_nomtp'][0]} {r['worst_nomtp'][1]:.2f} | {se} | {r['marker_rms_mm']:.2f} | {r['time_s']:.2f} |")


def main():
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("kinfunc").setLevel(logging.ERROR)
    torch.set_num_threads(ARGS.threads)
    t_all = time.perf_counter()
    out = {
        "machine": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(), "started": time.strftime("%H:%M:%S UTC", time.gmtime()),
        "recipe": {"function": "kinfunc.ik.scaling.scale_subject", "options": recipe_kwargs(),
                   "scale_weight": "scale_prior_weights(model, markers): 1e-4 bodies with >= 3 markers, 1e-2 others"},
    }
    gen = load_generic()
    kf.ik.solve(gen, load_trial("subject01", False).slice(None, 3.40))  # warm-up (plans, first-use costs)
    rows = []
    print(f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY={out['OMP_WAIT_POLICY']}, load {os.getloadavg()}")
    for s in SUBJECTS:
        subject_cases(gen, s, rows, ablations=(s == "subject01"))
    out["rows"] = rows
    ev = {}
    for s in SUBJECTS:
        a = next(r for r in rows if r["subject"] == s and r["case"] == "a_true_pose")
        for case in ("b_default", "c_recipe"):
            for mk in ("noJC", "JC"):
                c = next(r for r in rows if r["subject"] == s and r["case"] == case and r["markers"] == mk and not r["noise"])
                ev[f"{s}/{case}/{mk}"] = {
                    "mean_deg_le_1.5": c["mean_deg"] <= 1.5, "mean_nomtp_deg_le_1.5": c["mean_nomtp_deg"] <= 1.5,
                    "every_nonmtp_le_5": c["worst_nomtp"][1] <= 5.0, "true_model_le_0.05": a["worst"][1] <= 0.05,
                }
    out["evidence"] = ev
    timing_case(gen, out)
    if not ARGS.no_ab:
        threads_ab(out)
    out["loadavg_end"] = os.getloadavg()
    out["total_s"] = time.perf_counter() - t_all
    table(rows)
    print("\nevidence (clean walking markers alone):")
    for k, v in ev.items():
        print(f"  {k:28s} " + "  ".join(f"{kk}={vv}" for kk, vv in v.items()))
    print(f"\ntotal {out['total_s']:.1f} s, load average {out['loadavg_start']} -> {out['loadavg_end']}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, default=lambda o: float(o) if hasattr(o, "__float__") else str(o)))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
