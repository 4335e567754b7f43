"""The ``kinfunc`` command: demo, ik, scale, fk, convert, info, view.

Every subcommand has ``--help``. Bad input ends with exit code 2 and one line on stderr
naming the cause (``--debug`` shows the traceback); progress goes to stderr, results to
stdout. See ``docs/cli.md``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time as _time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

__all__ = ["main", "load_model_spec", "load_trial", "run_ik_pipeline"]

FIT_CHOICES = ("pose", "global_scale", "segment_scales", "marker_offsets")


from .pipeline import BUILTIN_SETS, PipelineError, _say, check_height_option, load_model_spec, load_trial, run_ik_pipeline
from .pipeline import dtype_of as _dtype
from .pipeline import match_markers as _match
from .pipeline import orient as _orient


class CLIError(PipelineError):
    """A bad command line or input; printed as one line."""


# --------------------------------------------------------------------------------- commands
def cmd_demo(a) -> int:
    from .demo import run_demo

    out = Path(a.out)
    _say("demo: built-in 18-DOF model, synthetic subject (scaled segments, displaced markers), two walking strides")
    d = run_demo(out, report=not a.no_report, progress=_say, dtype=_dtype(a.dtype), device=a.device)
    print(d.summary())
    for k, v in d.files.items():
        print(f"  {k:8s} {v}")
    return 0


def cmd_ik(a) -> int:
    from .batch import expand_trials, run_batch

    trials: list[Path] = []
    for spec in a.trial:
        got = expand_trials(spec)
        if not got:
            raise CLIError(f"{spec}: no such trial file (or the folder/glob matches no .trc/.c3d)")
        trials += got
    if a.up and a.auto_orient:
        raise CLIError("--up/--forward and --auto-orient exclude each other; pick one")
    fit = _fit_list(a.fit)
    check_height_option(a.height, fit, a.static)  # fail before the first trial (or every trial of a batch)
    opts = dict(model=a.model, setup=a.setup, static=a.static, fit=fit, up=a.up, forward=a.forward,
                auto_orient=a.auto_orient, dtype=a.dtype, device=a.device, solver=a.solver, smoothness=a.smoothness,
                report=not a.no_report, reference=a.reference, robust=a.robust, height=a.height)
    if len(trials) == 1 and not a.batch:
        out = a.out or f"{trials[0].stem}_kinfunc"
        res, files = run_ik_pipeline(str(trials[0]), out_dir=out, **opts)
        print(res.summary())
        return 0
    # batch: fail early on a bad model rather than once per trial
    load_model_spec(a.model, dtype=_dtype(a.dtype))
    out = Path(a.out or "kinfunc_batch")
    _say(f"batch: {len(trials)} trials, {a.jobs} process(es), results in {out}/")
    rows = run_batch(trials, out, opts, jobs=a.jobs, log=_say)
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok}/{len(rows)} trials solved; summary: {out / 'summary.csv'}")
    return 0 if ok == len(rows) else 1


def cmd_view(a) -> int:
    folder = Path(a.result_dir)
    if folder.is_file() and folder.suffix.lower() in (".html", ".htm"):
        page = folder
    elif not folder.is_dir():
        raise CLIError(f"{folder}: no such result folder (give the --out folder of `kinfunc ik` or `kinfunc demo`)")
    else:
        page = folder / "report.html"
    if not page.is_file():
        inner = sorted(folder.glob("*/report.html"))[:5]
        hint = ("; reports in its subfolders (a batch): " + ", ".join(str(p.parent) for p in inner)) if inner else \
            "; write one with `kinfunc ik TRIAL --model ... --out DIR` (without --no-report; needs matplotlib: " \
            "pip install 'kinfunc[report]') or `kinfunc demo`"
        raise CLIError(f"{folder}: no report.html in this folder{hint}")
    page = page.resolve()
    print(page)
    if not a.no_open:
        import webbrowser

        if not webbrowser.open(page.as_uri()):
            _say("could not start a web browser here; open the file above in one (it needs no network)")
    return 0


def _fit_list(spec: str) -> tuple[str, ...]:
    fit = tuple(f.strip() for f in spec.replace("+", ",").split(",") if f.strip())
    bad = [f for f in fit if f not in FIT_CHOICES]
    if bad or not fit:
        raise CLIError(f"--fit {spec}: unknown group(s) {bad}; choose from {', '.join(FIT_CHOICES)} (comma-separated)")
    return fit


def cmd_scale(a) -> int:
    from . import io
    from .ik import solve

    dt = _dtype(a.dtype)
    fit = _fit_list(a.fit)
    if "pose" not in fit:
        fit = ("pose",) + fit
    check_height_option(a.height, fit, None)
    mdl = load_model_spec(a.model, dtype=dt, device=a.device)
    st = _match(mdl, _orient(load_trial(a.static), a.up, a.forward, a.auto_orient, _say), _say)
    _say(f"scaling on {st.n_frames} frames, fit={'+'.join(fit)}" + (f", height {a.height:g} m" if a.height else ""))
    res = solve(mdl, st, fit=fit, dtype=dt, device=a.device, height=a.height)
    print(res.summary())
    out = Path(a.out)
    if out.suffix.lower() == ".osim":
        if Path(a.model).suffix.lower() != ".osim":
            raise CLIError(f"{out}: writing .osim needs an .osim input model as template; write a .json model instead")
        io.save_osim(res.model, out, template=a.model)
    else:
        if out.suffix.lower() != ".json":
            out = out.with_suffix(".json")
        io.save_model(res.model, out)
    topo = res.model.topology
    bs = res.model.body_scales
    print("scales: " + ", ".join(f"{b} {float(bs[i].mean()):.3f}" for i, b in enumerate(topo.body_names))
          + f"; global {float(res.model.global_scale):.3f}")
    print(f"wrote {out}")
    return 0


def cmd_fk(a) -> int:
    import torch

    from . import io
    from .fk import marker_positions
    from .trial import MarkerTrial

    mdl = load_model_spec(a.model, dtype=torch.float64)
    if not Path(a.motion).exists():
        raise CLIError(f"{a.motion}: motion file not found")
    mot = io.read_mot(a.motion, model=mdl)
    q = mot.q_for(mdl)
    x = marker_positions(mdl, q).detach().to("cpu", torch.float64)
    t = mot.time.to(torch.float64)
    dtm = torch.diff(t)
    rate = float(1.0 / dtm.mean()) if dtm.numel() else 1.0
    tr = MarkerTrial(names=mdl.marker_names, xyz=x, rate=rate, time=t, units=a.units, source=str(a.motion))
    out = Path(a.out or Path(a.motion).with_suffix(".trc").name)
    io.write_trc(out, tr, units=a.units)
    print(f"wrote {out}: {tr.n_frames} frames x {tr.n_markers} markers @ {rate:.4g} Hz ({a.units})")
    return 0


def cmd_convert(a) -> int:
    from . import io

    if not Path(a.src).exists():
        raise CLIError(f"{a.src}: file not found")
    tr = io.convert(a.src, a.dst, units=a.units)
    print(f"wrote {a.dst}: {tr.n_frames} frames x {tr.n_markers} markers @ {tr.rate:g} Hz")
    return 0


def cmd_info(a) -> int:
    import torch

    from . import io

    spec = a.file
    ext = Path(spec).suffix.lower()
    if spec.startswith("builtin:") or ext in (".osim", ".json"):
        m = load_model_spec(spec, dtype=torch.float64)
        topo = m.topology
        print(f"model {topo.name}: {topo.n_bodies} bodies, {topo.n_coordinates} coordinates, {topo.n_markers} markers")
        print("bodies: " + ", ".join(f"{b}<-{topo.body_names[p] if p >= 0 else 'ground'}" for b, p in zip(topo.body_names, topo.parents)))
        lo, hi = m.coordinate_limits()
        cs = []
        for i, n in enumerate(topo.coordinate_names):
            flag = " locked" if topo.coordinate_locked[i] else ""
            cs.append(f"{n}{flag}")
        print("coordinates: " + ", ".join(cs))
        if topo.dependent_names:
            print("coupled: " + ", ".join(topo.dependent_names))
        print("markers: " + ", ".join(f"{n}@{topo.body_names[b]}" for n, b in zip(topo.marker_names, topo.marker_bodies)))
        return 0
    if ext in (".trc", ".c3d"):
        tr = load_trial(spec)
        gaps = tr.gap_summary()
        T = tr.n_frames
        print(f"trial {spec}: {T} frames x {tr.n_markers} markers @ {tr.rate:g} Hz, "
              f"{float(tr.time[0]) if T else 0:.3f}-{float(tr.time[-1]) if T else 0:.3f} s, units {tr.units}")
        miss = sum(g.missing for g in gaps.values())
        print(f"missing samples: {100 * miss / max(1, T * tr.n_markers):.1f}%")
        for n, g in gaps.items():
            print(f"  {n:24s} missing {g.missing:5d} frames, {g.gaps} gap(s), longest {g.longest}")
        try:
            gu = tr.suggest_orientation()
            print(f"orientation guess: up={gu['up']} forward={gu['forward']} "
                  f"({'confident' if gu.confident else 'not confident'}; {gu.reason})")
        except ValueError as e:
            print(f"orientation guess: none ({e})")
        for w in tr.meta.get("warnings", ()) or ():
            print(f"note: {w}")
        return 0
    if ext in (".mot", ".sto"):
        if not Path(spec).exists():
            raise CLIError(f"{spec}: file not found")
        d = io.read_sto(spec)
        print(f"table {spec}: {d.n_frames} rows, {len(d.names)} columns, inDegrees={d.in_degrees}, "
              f"time {float(d.time[0]) if d.n_frames else 0:.3f}-{float(d.time[-1]) if d.n_frames else 0:.3f} s")
        print("columns: " + ", ".join(d.names))
        return 0
    if ext == ".xml":
        if not Path(spec).exists():
            raise CLIError(f"{spec}: file not found")
        s = io.load_ik_setup(spec)
        print(f"IK setup {spec}: {len(s.marker_weights or {})} marker tasks, {len(s.coordinate_tasks)} coordinate tasks, "
              f"time range {s.time_range}")
        print("markers: " + ", ".join(f"{k}={v:g}" for k, v in (s.marker_weights or {}).items()))
        print("coordinates: " + ", ".join(f"{k}={v.weight:g}" for k, v in s.coordinate_tasks.items()))
        return 0
    if not Path(spec).exists():
        raise CLIError(f"{spec}: file not found")
    raise CLIError(f"{spec}: unknown file type '{ext}'; info reads .osim .json builtin:NAME .trc .c3d .mot .sto .xml")


# --------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    g.add_argument("--device", default=None, help="torch device for the solve (cpu, cuda, cuda:1; default cpu)")
    g.add_argument("--dtype", default="float64", choices=("float64", "float32"), help="solve precision (default float64)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default 1: small batched solves run fastest single-threaded; "
                        "env KINFUNC_THREADS)")

    p = argparse.ArgumentParser(prog="kinfunc", description="Differentiable kinematics for human movement: "
                                "scale, inverse kinematics, forward kinematics, file conversion.",
                                epilog="Start with `kinfunc demo`. Docs: docs/cli.md")
    from . import __version__

    p.add_argument("--version", action="version", version=f"kinfunc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", parents=[common], help="built-in model + synthetic walk: scale + IK + report, no files needed",
                       description="Generate a walking trial of a synthetic subject (normative gait curves, scaled "
                       "segments, displaced markers, soft-tissue-like noise, gaps), fit scales, marker offsets and "
                       "poses, compare with the known truth and write a .mot, a JSON model and a report.")
    d.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")
    d.add_argument("--no-report", action="store_true", help="skip report.png/report.html")
    d.set_defaults(func=cmd_demo)

    k = sub.add_parser("ik", parents=[common], help="inverse kinematics of one trial, or a batch (folder/glob)",
                       description="Inverse kinematics over whole trials. TRIAL: .trc/.c3d file(s), a folder or a "
                       "quoted glob; several trials run as a batch with a summary CSV.")
    k.add_argument("trial", nargs="+", help=".trc/.c3d file (or 3-D keypoints: .npy/.npz/.json), folder or glob")
    k.add_argument("--model", required=True, help="a .osim, a .json model (kinfunc scale/demo output), builtin:cmu|pig|opensim (lower body) or builtin:full_body:SET (SET: cmu, pig, coco17, halpe26, body25, h36m17, smpl24, opencap)")
    k.add_argument("--setup", help="OpenSim IK setup .xml (marker weights, coordinate tasks, time range)")
    k.add_argument("--static", help="static trial: fit scales/offsets on it first, then pose-only IK on TRIAL")
    k.add_argument("--fit", default="pose", help="comma-separated groups to fit: " + ", ".join(FIT_CHOICES)
                   + " (default pose)")
    k.add_argument("--out", help="output folder (default <trial>_kinfunc/, or kinfunc_batch/ for a batch)")
    k.add_argument("--up", help="lab axis pointing up, e.g. z or +z (model: +y)")
    k.add_argument("--forward", help="lab axis pointing forward, e.g. +x or -y (model: +x)")
    k.add_argument("--auto-orient", action="store_true", help="guess --up/--forward from the data and print the guess")
    k.add_argument("--solver", default="auto", choices=("auto", "gn", "lbfgs"), help="IK solver (default: Gauss-Newton)")
    k.add_argument("--smoothness", type=float, default=0.0, help="weight of squared 2nd differences of q (default 0)")
    k.add_argument("--robust", action="store_true",
                   help="robust marker loss: down-weight displaced, swapped or mislabelled markers (listed in the "
                   "quality report); leave off for clean data and OpenSim comparisons")
    k.add_argument("--height", type=float, metavar="METRES",
                   help="the subject's standing height in metres (e.g. 1.62): a prior on the scales fitted "
                   "(with --fit ...,segment_scales or global_scale, or --static); the data override it where they "
                   "see a segment")
    k.add_argument("--reference", help="a .mot to overlay in the report (e.g. OpenSim's IK result)")
    k.add_argument("--no-report", action="store_true", help="skip report.png/report.html")
    k.add_argument("--jobs", type=int, default=1, help="parallel processes for a batch (default 1)")
    k.add_argument("--batch", action="store_true", help="batch layout (summary.csv) even for one trial")
    k.set_defaults(func=cmd_ik)

    s = sub.add_parser("scale", parents=[common], help="fit segment scales and marker offsets on a static trial",
                       description="Fit a model to a static (or any) trial and write the fitted model.")
    s.add_argument("static", help="static trial .trc/.c3d")
    s.add_argument("--model", required=True, help=".osim, .json or builtin:cmu|pig|opensim")
    s.add_argument("--fit", default="segment_scales,marker_offsets",
                   help="groups (pose is always added; default segment_scales,marker_offsets)")
    s.add_argument("--out", default="model_scaled.json", help="output model: .json (any input) or .osim (.osim input)")
    s.add_argument("--height", type=float, metavar="METRES",
                   help="the subject's standing height in metres (e.g. 1.62): a prior on the scales")
    s.add_argument("--up")
    s.add_argument("--forward")
    s.add_argument("--auto-orient", action="store_true")
    s.set_defaults(func=cmd_scale)

    f = sub.add_parser("fk", parents=[common], help="marker trajectories (.trc) of a model moved by a .mot",
                       description="Forward kinematics: model markers at every row of a motion file, written as TRC.")
    f.add_argument("model", help=".osim, .json or builtin:cmu|pig|opensim")
    f.add_argument("motion", help="OpenSim .mot with the model's coordinates")
    f.add_argument("--out", help="output .trc (default <motion>.trc in the current folder)")
    f.add_argument("--units", default="mm", choices=("mm", "m", "cm"), help="TRC units (default mm)")
    f.set_defaults(func=cmd_fk)

    c = sub.add_parser("convert", parents=[common], help="convert marker files (c3d -> trc, trc -> trc/c3d)",
                       description="Convert a marker file by extension; the lab frame is kept.")
    c.add_argument("src", help=".c3d or .trc")
    c.add_argument("dst", help=".trc or .c3d")
    c.add_argument("--units", choices=("mm", "m", "cm"), help="output units (default: the source's)")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", parents=[common], help="what is inside a model, trial, motion or setup file",
                       description="Summarise a .osim/.json/builtin:NAME model, a .trc/.c3d trial, a .mot/.sto table "
                       "or an IK setup .xml.")
    i.add_argument("file")
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("view", parents=[common], help="open a result folder's report.html (3-D viewer) in a browser",
                       description="Open RESULT_DIR/report.html (written by `kinfunc ik` or `kinfunc demo`) in the "
                       "default web browser: the fitted skeleton over time with the markers and their errors, "
                       "joint-angle curves and the fit-quality flags. The page is self-contained (no network).")
    v.add_argument("result_dir", metavar="RESULT_DIR", help="output folder of `kinfunc ik`/`demo` (or a report .html)")
    v.add_argument("--no-open", action="store_true", help="only print the report's path")
    v.set_defaults(func=cmd_view)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``kinfunc`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="kinfunc: %(message)s")
    if debug:
        os.environ["KINFUNC_DEBUG"] = "1"
    import warnings

    if not debug:
        warnings.simplefilter("ignore")
    try:
        import torch

        dev = getattr(args, "device", None)
        if dev:
            try:
                d = torch.device(dev)
            except RuntimeError:
                raise CLIError(f"--device {dev}: not a torch device; use cpu, cuda or cuda:N") from None
            if d.type == "cuda" and not torch.cuda.is_available():
                raise CLIError(f"--device {dev}: CUDA is not available in this torch build/machine; use --device cpu")
        threads = args.threads or int(os.environ.get("KINFUNC_THREADS", "1"))
        torch.set_num_threads(max(1, threads))
        from .allocator import retain_freed_memory

        retain_freed_memory()  # this process is ours: keep freed memory for reuse (see kinfunc.allocator)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except Exception as e:  # one line, no traceback unless --debug
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, KeyError) and msg.startswith(("'", '"')):
            msg = msg[1:-1] if msg[-1:] in "'\"" else msg
        known = isinstance(e, (ValueError, KeyError, OSError, ImportError))
        _say(f"error: {msg}" + ("" if known else f" ({type(e).__name__}; run with --debug for the traceback)"))
        return 2 if known else 1


if __name__ == "__main__":  # python -m kinfunc.cli
    sys.exit(main())
