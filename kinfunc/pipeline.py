"""Trial in, result and files out: the steps shared by the ``kinfunc`` command and the batch runner.

``run_ik_pipeline`` loads a model (``builtin:NAME``, ``.osim``, ``.json``) and a trial
(``.trc``/``.c3d``), applies the lab orientation the user chose, matches marker names, scales
on a static trial when given, solves IK and writes the outputs (``.mot``, marker errors, the
fit-quality report, the fitted model, the plots). Bad input raises :class:`PipelineError` (a
``ValueError``) with one line naming the file and the fix. Library code: nothing here parses
a command line or prints, except through the ``log`` callable it is given.
"""
from __future__ import annotations

import sys
import time as _time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

__all__ = ["PipelineError", "BUILTIN_SETS", "check_height_option", "dtype_of", "load_model_spec", "load_trial", "orient", "match_markers",
           "run_ik_pipeline"]

BUILTIN_SETS = ("cmu", "pig", "opensim")


class PipelineError(ValueError):
    """A bad input or option; one line naming the cause and the fix."""


def _say(msg: str) -> None:
    print(f"kinfunc: {msg}", file=sys.stderr, flush=True)


def dtype_of(name: str):
    """The torch dtype named ``float64``/``double`` or ``float32``/``float``."""
    import torch

    try:
        return {"float64": torch.float64, "float32": torch.float32, "double": torch.float64, "float": torch.float32}[name]
    except KeyError:
        raise PipelineError(f"--dtype {name}: use float64 or float32") from None


def load_model_spec(spec: str, dtype=None, device=None):
    """A model from ``spec``: ``builtin:cmu|pig|opensim`` (the lower body),
    ``builtin:full_body:<set>`` (the whole body with marker or keypoint set ``<set>``: cmu, pig,
    coco17, halpe26, body25, h36m17, smpl24, opencap), a ``.osim`` or a ``.json`` model file."""
    import torch

    from . import io
    from .models import full_body, lower_body
    from .models.full_body import MARKER_SETS as FULL_SETS

    dtype = dtype or torch.float64
    if spec.startswith("builtin:full_body"):
        name = spec.split(":", 2)[2] if spec.count(":") >= 2 else "cmu"
        if name not in FULL_SETS:
            raise PipelineError(f"unknown full-body marker set '{name}' in '{spec}'; use builtin:full_body:<set> with "
                                f"<set> one of {', '.join(FULL_SETS)}")
        return full_body(name, dtype=dtype, device=device)
    if spec.startswith("builtin:") or spec in BUILTIN_SETS:
        name = spec.split(":", 1)[-1]
        if name not in BUILTIN_SETS:
            raise PipelineError(f"unknown built-in model '{spec}'; use one of " + ", ".join(f"builtin:{s}" for s in BUILTIN_SETS))
        return lower_body(name, dtype=dtype, device=device)
    p = Path(spec)
    if not p.exists():
        raise PipelineError(f"{spec}: model file not found (give a .osim, a .json model or builtin:cmu|pig|opensim)")
    ext = p.suffix.lower()
    if ext == ".osim":
        return io.load_osim(p, dtype=dtype, device=device)
    if ext == ".json":
        return io.load_model(p, dtype=dtype, device=device)
    raise PipelineError(f"{spec}: unknown model file type '{ext}'; use .osim, .json or builtin:cmu|pig|opensim")


def load_trial(path: str):
    """A marker trial from a ``.trc`` or ``.c3d`` file, or 3-D keypoints with confidences from a
    ``.npy``/``.npz``/``.json`` file (:func:`kinfunc.io.load_keypoints`; metres, lab frame as stored)."""
    from .io import load_markers

    p = Path(path)
    if not p.exists():
        raise PipelineError(f"{path}: trial file not found")
    if p.suffix.lower() not in (".trc", ".c3d", ".npy", ".npz", ".json"):
        raise PipelineError(f"{path}: unknown trial file type '{p.suffix}'; use .trc, .c3d or keypoints .npy/.npz/.json")
    return load_markers(p)


def orient(trial, up: Optional[str], forward: Optional[str], auto: bool, log: Callable[[str], None]):
    """Apply the lab->model orientation the user chose; hint when the data look non-Y-up."""
    src = trial.source or "trial"
    if auto:
        g = trial.suggest_orientation()
        log(f"{Path(src).name}: --auto-orient applied up={g['up']} forward={g['forward']} "
            f"({'confident' if g.confident else 'NOT confident, check it'}): {g.reason}")
        return trial.reoriented(**dict(g))
    if up or forward:
        return trial.reoriented(up=up or "y", forward=forward or "+x")
    try:
        g = trial.suggest_orientation()
    except ValueError:
        return trial
    if g["up"].lstrip("+") != "y":
        log(f"{Path(src).name}: markers look like lab axis {g['up']} is up (model: +y); pass --up/--forward "
            f"(e.g. --up {g['up']} --forward {g['forward']}) or --auto-orient if the fit looks wrong")
    return trial


def match_markers(model, trial, log: Callable[[str], None]):
    """``trial`` with its marker names renamed to the model's (``kinfunc.markersets.match``), the match logged."""
    from .markersets import match

    m = match(model.marker_names, trial.names)
    src = Path(trial.source or "trial").name
    if not model.marker_names:
        raise PipelineError(f"the model has no markers, so {src} cannot be fitted; use a model with a marker set "
                       "(an .osim with a MarkerSet, or builtin:cmu|pig|opensim)")
    if not m.pairs:
        raise PipelineError(
            f"{src}: none of the trial's marker names ({', '.join(trial.names[:12])}{' ...' if trial.n_markers > 12 else ''}) "
            f"matches the model's ({', '.join(model.marker_names[:12])}{' ...' if len(model.marker_names) > 12 else ''}); "
            "rename the markers or pick a model with this marker set (e.g. --model builtin:pig)")
    renames = {t: mm for mm, t in m.pairs.items() if t != mm}
    if renames:
        trial = trial.renamed(renames)
    log(f"{src}: markers: {m}")
    return trial


def run_ik_pipeline(trial_path: str, *, model: str, out_dir: Optional[str] = None, setup: Optional[str] = None,
                    static: Optional[str] = None, fit: Sequence[str] = ("pose",),
                    static_fit: Sequence[str] = ("pose", "segment_scales", "marker_offsets"),
                    up: Optional[str] = None, forward: Optional[str] = None, auto_orient: bool = False,
                    dtype: str = "float64", device: Optional[str] = None, solver: str = "auto",
                    smoothness: float = 0.0, report: bool = True, reference: Optional[str] = None,
                    robust: bool = False, height: Optional[float] = None,
                    log: Callable[[str], None] = _say) -> tuple[Any, dict]:
    """Load, (scale on ``static``,) solve IK on one trial and write outputs into ``out_dir``.

    Returns ``(IKResult, files)``; ``files`` names what was written (``motion``, ``model``,
    ``errors``, ``quality``, ``png``, ``html``). ``robust``: the robust marker loss (outlier
    markers down-weighted, see :func:`kinfunc.ik.solve`). ``height``: the subject's standing
    height (m), a prior on the scales fitted (on ``static`` when given, else in ``fit``; see
    ``height`` of :func:`kinfunc.ik.solve`). Used by ``kinfunc ik`` and by :mod:`kinfunc.batch`.
    """
    from . import io
    from .ik import solve

    height = check_height_option(height, fit, static)
    scales = ("segment_scales", "global_scale")
    dt = dtype_of(dtype)
    t0 = _time.perf_counter()
    mdl = load_model_spec(model, dtype=dt, device=device)
    ik_setup = io.load_ik_setup(setup) if setup else None
    trial = match_markers(mdl, orient(load_trial(trial_path), up, forward, auto_orient, log), log)
    log(f"loaded {mdl!r} and {trial!r} in {_time.perf_counter() - t0:.2f} s")
    if static:
        st = match_markers(mdl, orient(load_trial(static), up, forward, auto_orient, log), log)
        log(f"static trial {Path(static).name}: fitting {'+'.join(static_fit)} on {st.n_frames} frames")
        sres = solve(mdl, st, fit=tuple(static_fit), setup=_no_time(ik_setup), dtype=dt, device=device,
                     height=height if any(f in static_fit for f in scales) else None)
        log(f"static: {sres.summary()}")
        mdl = sres.model
        fit = tuple(f for f in fit if f == "pose") or ("pose",)
    rng = f" (setup time range {ik_setup.time_range[0]:g}-{ik_setup.time_range[1]:g} s)" if ik_setup and ik_setup.time_range else ""
    log(f"IK on {trial.n_frames} frames{rng}, fit={'+'.join(fit)} ...")
    res = solve(mdl, trial, fit=tuple(fit), setup=ik_setup, solver=solver, smoothness=smoothness, dtype=dt,
                device=device, robust=robust, height=height if any(f in fit for f in scales) else None)
    log(res.summary())
    for line in res.quality.lines(res.time):
        log(line)
    files: dict = {}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = Path(trial_path).stem
        files["motion"] = out / f"{stem}_ik.mot"
        io.write_mot(files["motion"], res)
        files["errors"] = out / f"{stem}_ik_marker_errors.sto"
        import torch

        vals = torch.stack([res.marker_rms, res.marker_max], -1)
        io.write_sto(files["errors"], ["marker_error_RMS", "marker_error_max"], res.time, vals, title="marker_errors")
        files["quality"] = out / f"{stem}_ik_quality.txt"
        files["quality"].write_text("\n".join(res.quality.lines(res.time, max_lines=10**6)) + "\n")
        if static or any(f != "pose" for f in fit):
            files["model"] = io.save_model(res.model, out / f"{stem}_model.json")
            if Path(model).suffix.lower() == ".osim":
                files["osim"] = out / f"{stem}_model.osim"
                io.save_osim(res.model, files["osim"], template=model)
        if report:
            from .report import make_report

            made = make_report(res, out, trial=trial, reference=reference, reference_label=Path(reference).name
                               if reference else "reference")
            files.update(made or {})
        for k, v in files.items():
            log(f"wrote {k}: {v}")
    return res, files


def check_height_option(height: Optional[float], fit: Sequence[str], static: Optional[str]) -> Optional[float]:
    """``--height`` checked (metres, and something to scale: a static trial or a scale group in ``fit``)."""
    if height is None:
        return None
    from .ik.scaling import check_height

    try:
        h = check_height(height)
    except ValueError as e:
        raise PipelineError(f"--{e}") from None
    if not static and not any(f in fit for f in ("segment_scales", "global_scale")):
        raise PipelineError(f"--height {h:g} is a prior on the scales: fit them too (--fit pose,segment_scales or "
                            "--fit pose,global_scale) or give a --static trial")
    return h


def _no_time(setup):
    """The IK setup without its time range (a static trial has its own times)."""
    import dataclasses

    return None if setup is None else dataclasses.replace(setup, time_range=None)
