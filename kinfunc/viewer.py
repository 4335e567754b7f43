"""A self-contained interactive 3-D viewer of an IK result, for ``report.html``.

:func:`viewer_html` returns an HTML fragment (a ``<section>`` with its CSS, data and
JavaScript inline) that plays the fitted skeleton over time: segments from each parent's
joint centre to its child's (world poses from :func:`kinfunc.fk`), joint centres, the model
markers and the measured ones with an error line between them coloured by its size; play /
pause, a time slider, playback speed, orbit (drag), zoom (wheel), per-marker error on hover,
joint-angle curves with a cursor at the current frame (click or drag them to seek). Doubtful
frames of the fit-quality report (:class:`kinfunc.ik.quality.FitQuality`) are marked on the
time strip and the curves; markers with an issue (down-weighted by a robust solve, or not)
and doubtful markers get a ring, with the reason on hover.

Nothing is fetched at view time: the JavaScript (``kinfunc/_viewer.js``, plain canvas 2-D,
its own projection, no library) and CSS (``kinfunc/_viewer.css``) ship with the package and
are inlined. Long trials are decimated to at most ``max_frames`` frames (the page says so);
arrays travel as little-endian float32 / uint8, base64 in a JSON block, positions in mm.
:func:`viewer_page` wraps the fragment into a whole page and :func:`write_viewer` writes it.
"""
from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["viewer_data", "viewer_html", "viewer_page", "write_viewer", "MAX_FRAMES"]

PathLike = Union[str, Path]
MAX_FRAMES = 1000  # frames shown at most; longer trials are decimated evenly


def _np(x) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def _b64(a: np.ndarray, dtype: str) -> str:
    """``a`` as base64 of its little-endian ``dtype`` bytes (``"<f4"`` or ``"u1"``), C order."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def _fin(x, default: float = 0.0) -> float:
    """``float(x)``, or ``default`` when not finite (the page's JSON has no NaN)."""
    x = float(x)
    return x if np.isfinite(x) else default


def decimation(n_frames: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Indices ``(F,)`` of the frames shown: every ``ceil(T / max_frames)``-th frame of ``T``."""
    step = max(1, -(-n_frames // max(1, max_frames)))
    return np.arange(0, n_frames, step, dtype=np.int64)


def _window(idx: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The shown frame whose window ``[idx[k], idx[k+1])`` holds each original frame index."""
    return np.clip(np.searchsorted(idx, frames, side="right") - 1, 0, len(idx) - 1)


def _runs(frames: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted frame indices grouped into runs of consecutive frames ``(first, last)``."""
    out: list[list[int]] = []
    for f in sorted(frames):
        if out and f == out[-1][1] + 1:
            out[-1][1] = f
        else:
            out.append([f, f])
    return [(a, b) for a, b in out]


def _measured(trial: Any, names: Sequence[str], time: np.ndarray) -> np.ndarray:
    """Measured markers ``(F, M, 3)`` (m, NaN where missing or absent) at the trial frames
    nearest to ``time (F,)``; ``names`` in the result's order."""
    F, M = len(time), len(names)
    out = np.full((F, M, 3), np.nan)
    if trial is None:
        return out
    tx = _np(trial.xyz)
    tt = _np(trial.time)
    if tt.size == 0:
        return out
    j = np.clip(np.searchsorted(tt, time), 1, max(1, len(tt) - 1)) if len(tt) > 1 else np.zeros(F, np.int64)
    if len(tt) > 1:
        j = np.where(np.abs(tt[j - 1] - time) <= np.abs(tt[j] - time), j - 1, j)
    tn = list(trial.names)
    for m, n in enumerate(names):
        if n in tn:
            out[:, m] = tx[j, tn.index(n)]
    return out


def viewer_data(model: Any, result: Any, trial: Any = None, *, max_frames: int = MAX_FRAMES,
                title: Optional[str] = None, reference: Any = None, reference_label: str = "reference") -> dict:
    """The viewer's data: a JSON-able dict with arrays packed as base64 (see the module doc).

    ``model``: the fitted :class:`kinfunc.Model` (``None``: ``result.model``); ``result``: an
    :class:`kinfunc.ik.IKResult` with ``q (T, C)``, ``time (T,)``, ``marker_names`` (``M``),
    ``quality``; ``trial``: the fitted :class:`kinfunc.MarkerTrial` (metres, model frame) for
    the measured markers, matched by name and nearest time (``None``: model markers only).
    Shown frames ``F <= max_frames``; packed arrays (float32 unless said):

    * ``time (F,)`` s, ``frame (F,)`` original frame index (float32, exact below 2**24);
    * ``points (F, P, 3)`` mm: the ``B`` joint centres (each body's joint frame in its own
      body, world) then one tip per leaf body that has markers (its markers' mean position);
    * ``model (F, M, 3)``, ``measured (F, M, 3)`` mm (NaN: missing); ``rms (F,)`` mm;
    * ``angles (F, K)`` degrees of the ``K`` unlocked rotational coordinates; ``ref (F, K)``
      the same from ``reference`` (a :class:`kinfunc.io.MotionData`, e.g. ``read_mot`` of
      OpenSim's IK; matched by name, interpolated at the shown times, NaN where absent), only
      when given;
    * ``frame_flag (F,)`` uint8: 1 where a doubtful frame falls in the shown frame's window;
    * ``marker_flag (M,)`` uint8: 1 for a doubtful marker;

    plus ``bones`` (pairs of point indices), ``side`` per bone (``r``/``l``/``c``), ``flags``
    (runs of doubtful frames with reasons) and ``issues`` (marker issue runs with reason and
    robust weight), both with shown-frame indices ``a..b`` inclusive.
    """
    from .fk import fk, marker_positions

    model = result.model if model is None else model
    model = model.to(device="cpu", dtype=torch.float64)
    topo = model.topology
    names = list(result.marker_names)
    q_all = _np(result.q)
    t_all = _np(result.time)
    T = q_all.shape[0]
    idx = decimation(T, max_frames)
    F = len(idx)
    q = torch.from_numpy(q_all[idx])
    t = t_all[idx]
    with torch.no_grad():
        poses = fk(model, q)
        s_body = model.global_scale * model.body_scales  # (B, 3)
        jc_local = model.child_location * s_body  # (B, 3) joint frame in its body
        jc = (poses.R @ jc_local[..., None])[..., 0] + poses.t  # (F, B, 3)
        um = model.with_markers(names)
        mk = marker_positions(um, q, poses)  # (F, M, 3)
        # leaf bodies: a tip at the mean of their markers, so feet, head and hands have a length
        children = {p for p in topo.parents if p >= 0}
        tips, tip_of = [], []
        mb = list(topo.marker_bodies)
        all_mk = marker_positions(model, q, poses) if topo.n_markers else None
        for b in range(topo.n_bodies):
            on = [i for i, x in enumerate(mb) if x == b]
            if b not in children and topo.parents[b] >= 0 and on:
                tips.append(all_mk[:, on].mean(1))
                tip_of.append(b)
    pts = torch.cat([jc] + [x[:, None] for x in tips], 1) if tips else jc
    pts = _np(pts) * 1e3
    mk = _np(mk) * 1e3
    meas = _measured(trial, names, t) * 1e3
    B = topo.n_bodies
    bones = [[p, b] for b, p in enumerate(topo.parents) if p >= 0] + [[b, B + k] for k, b in enumerate(tip_of)]

    def side(b: int) -> str:
        n = topo.body_names[b].lower()
        return "r" if n.endswith(("_r", "_right")) else "l" if n.endswith(("_l", "_left")) else "c"

    bone_side = [side(c if c < B else tip_of[c - B]) for _, c in bones]
    rot = [i for i, mo in enumerate(topo.coordinate_motion)
           if getattr(mo, "value", mo) == "rotational" and not topo.coordinate_locked[i]]
    angles = np.degrees(q_all[idx][:, rot]) if rot else np.zeros((F, 0))
    ref = None
    if reference is not None:
        ref = np.full_like(angles, np.nan)
        rt = _np(reference.time)
        for k, i in enumerate(rot):
            n = topo.coordinate_names[i]
            if n in reference.names and rt.size:
                rv = _np(reference.values[:, list(reference.names).index(n)])
                inside = (t >= rt[0] - 1e-9) & (t <= rt[-1] + 1e-9)
                ref[inside, k] = np.degrees(np.interp(t[inside], rt, rv))
    rms = _np(result.marker_rms)[idx] * 1e3
    err = _np(result.marker_error)

    qual = getattr(result, "quality", None)
    frame_flag = np.zeros(F, np.uint8)
    marker_flag = np.zeros(len(names), np.uint8)
    flags: list[dict] = []
    issues: list[dict] = []
    if qual is not None:
        ff = _np(qual.frame_flags).astype(bool)
        if ff.shape == (T,) and ff.any():
            frame_flag = np.maximum.reduceat(ff.astype(np.uint8), idx)
        reasons = dict(qual.frame_reasons)
        for a, b in _runs([f for f, _ in qual.frame_reasons]):
            ka, kb = _window(idx, np.array([a, b]))
            flags.append({"a": int(ka), "b": int(kb), "first": int(a), "last": int(b), "t0": _fin(t_all[a]),
                          "t1": _fin(t_all[b]), "reason": str(reasons[a])})
        mf = _np(qual.marker_flags).astype(bool)
        if mf.shape == (len(names),):
            marker_flag = mf.astype(np.uint8)
        for iss in qual.issues:
            if iss.marker not in names:
                continue
            ka, kb = _window(idx, np.array([iss.first, iss.last]))
            issues.append({"m": names.index(iss.marker), "a": int(ka), "b": int(kb), "first": int(iss.first),
                           "last": int(iss.last), "t0": _fin(iss.t0), "t1": _fin(iss.t1),
                           "max_mm": _fin(1e3 * iss.max_error), "reason": str(iss.reason),
                           "weight": _fin(iss.weight, 1.0)})
    with np.errstate(all="ignore"):
        fin = err[np.isfinite(err)]
        med = float(np.median(fin)) * 1e3 if fin.size else 0.0
        per_marker = np.sqrt(np.nanmean(np.where(np.isfinite(err), err, np.nan) ** 2, 0)) * 1e3 if err.size else np.zeros(0)
    red = max(5.0 * med, 15.0)  # the quality report's issue threshold (kinfunc.ik.quality.issue_threshold)
    allz = np.concatenate([pts[..., 1].ravel(), mk[..., 1].ravel(), meas[..., 1].ravel()])
    allz = allz[np.isfinite(allz)]
    floor = float(np.percentile(allz, 0.5)) if allz.size else 0.0
    head = title or f"{getattr(result, 'solver', 'IK')} fit={'+'.join(getattr(result, 'fit', ()) or ('pose',))}"
    return {
        "title": head,
        "model_name": topo.name,
        "n_total": int(T),
        "n_shown": int(F),
        "step": int(idx[1] - idx[0]) if F > 1 else 1,
        "n_points": int(pts.shape[1]),
        "n_bodies": int(B),
        "n_markers": len(names),
        "n_angles": len(rot),
        "markers": names,
        "point_names": list(topo.body_names) + [f"{topo.body_names[b]} tip" for b in tip_of],
        "angle_names": [topo.coordinate_names[i] for i in rot],
        "bones": bones,
        "side": bone_side,
        "floor_mm": _fin(floor),
        "err_mm": {"median": _fin(med), "red": _fin(red, 15.0)},
        "marker_rms_mm": [None if not np.isfinite(v) else round(float(v), 2) for v in per_marker],
        "flags": flags,
        "issues": issues,
        "robust": bool(getattr(qual, "robust", False)),
        "has_measured": trial is not None,
        "reference_label": str(reference_label) if ref is not None else None,
        "arrays": {
            "time": _b64(t, "<f4"),
            "frame": _b64(idx, "<f4"),
            "points": _b64(pts, "<f4"),
            "model": _b64(mk, "<f4"),
            "measured": _b64(meas, "<f4"),
            "rms": _b64(rms, "<f4"),
            "angles": _b64(angles, "<f4"),
            "frame_flag": _b64(frame_flag, "u1"),
            "marker_flag": _b64(marker_flag, "u1"),
            **({"ref": _b64(ref, "<f4")} if ref is not None else {}),
        },
    }


def _asset(name: str) -> str:
    text = resources.files("kinfunc").joinpath(name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"kinfunc/{name} must not contain a closing script/style tag")
    return text


def _json_for_script(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: every ``<`` escaped as ``\\u003c``
    (so no ``</script>`` and no ``<!--`` in marker names or reasons ends the block)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def viewer_html(model: Any, result: Any, trial: Any = None, *, max_frames: int = MAX_FRAMES,
                title: Optional[str] = None, reference: Any = None, reference_label: str = "reference") -> str:
    """The viewer as an HTML fragment (``<section id="kfv">`` with inline CSS, data and JS).

    Arguments as :func:`viewer_data`. One viewer per page (element ids start with ``kfv-``);
    the script exposes ``window.kfViewer`` (frame, play/pause, setFrame, project) for tests.
    """
    d = viewer_data(model, result, trial, max_frames=max_frames, title=title, reference=reference,
                    reference_label=reference_label)
    T, F = d["n_total"], d["n_shown"]
    note = (f"{F} of {T} frames shown (one frame in {d['step']}, to keep the page small)"
            if F < T else f"all {T} frames shown")
    return f"""<section id="kfv" class="kfv">
<style>{_asset("_viewer.css")}</style>
<p class="kfv-note">3-D view of the fit: {html.escape(d['model_name'])}, {len(d['markers'])} markers; {note}.
Drag to orbit, wheel to zoom, double-click to reset; space plays/pauses, arrow keys step.
Hover a marker for its error.</p>
<div class="kfv-stage"><canvas id="kfv-canvas" class="kfv-canvas" tabindex="0" aria-label="3-D view of the fitted skeleton"></canvas>
<div id="kfv-banner" class="kfv-banner" hidden></div><div id="kfv-tip" class="kfv-tip" hidden></div>
<div id="kfv-legend" class="kfv-legend"></div></div>
<div class="kfv-controls"><button id="kfv-play" type="button">&#9654; play</button>
<div class="kfv-track"><input id="kfv-slider" type="range" min="0" max="{max(0, F - 1)}" value="0" step="1" aria-label="frame">
<canvas id="kfv-strip" class="kfv-strip" title="red: doubtful frames"></canvas></div>
<span id="kfv-time" class="kfv-time"></span>
<label>speed <select id="kfv-speed"><option value="0.1">0.1&times;</option><option value="0.25">0.25&times;</option>
<option value="0.5">0.5&times;</option><option value="1" selected>1&times;</option><option value="2">2&times;</option>
<option value="4">4&times;</option></select></label>
<label><input id="kfv-follow" type="checkbox" checked> follow</label>
<button id="kfv-reset" type="button">reset view</button></div>
<canvas id="kfv-curves" class="kfv-curves" aria-label="joint angles; click to seek"></canvas>
<script type="application/json" id="kfv-data">{_json_for_script(d)}</script>
<script>{_asset("_viewer.js")}</script>
</section>"""


def viewer_page(model: Any, result: Any, trial: Any = None, **kw: Any) -> str:
    """A whole HTML page holding only the viewer (arguments as :func:`viewer_data`)."""
    title = kw.get("title")
    body = viewer_html(model, result, trial, **kw)
    head = html.escape(title or "kinfunc motion viewer")
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{head}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>\n'
            f'<body style="font-family:sans-serif;margin:1em 2em"><h1>{head}</h1>\n{body}\n</body></html>\n')


def write_viewer(path: PathLike, model: Any, result: Any, trial: Any = None, **kw: Any) -> Path:
    """Write :func:`viewer_page` to ``path`` (UTF-8; keywords as :func:`viewer_data`); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(viewer_page(model, result, trial, **kw), encoding="utf-8")
    return p
