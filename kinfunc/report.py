"""Plots of an IK result: ``report.png`` and ``report.html`` (matplotlib, Agg backend).

``report.html`` opens with the interactive 3-D viewer of :mod:`kinfunc.viewer` (the skeleton,
model and measured markers over time, joint-angle curves; self-contained, no network).
:func:`make_report` draws joint-angle curves per coordinate in degrees (optionally over a
reference motion such as OpenSim's IK ``.mot``), marker RMS per frame, per-marker error bars
and a 3-D stick figure (body origins parent -> child, model markers vs measured). matplotlib
is optional (the ``report`` extra): without it :func:`make_report` returns ``None`` and says so
in one line on stderr.
"""
from __future__ import annotations

import html
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

__all__ = ["make_report", "have_matplotlib"]

PathLike = Union[str, Path]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _np(x) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def make_report(result: Any, out_dir: PathLike, trial: Any = None, reference: Any = None,
                reference_label: str = "reference", title: Optional[str] = None, viewer: bool = True,
                max_frames: int = 1000) -> Optional[dict]:
    """Write ``report.png`` and ``report.html`` for an :class:`kinfunc.ik.IKResult` into ``out_dir``.

    ``trial``: the :class:`kinfunc.MarkerTrial` that was fitted (metres, model frame) for the
    measured markers in the stick figure and the viewer; ``reference``: a ``.mot`` path or a
    :class:`kinfunc.io.MotionData` to overlay (columns matched by coordinate name, time axis
    as stored). ``viewer``: embed the interactive 3-D viewer (:mod:`kinfunc.viewer`, self-
    contained, at most ``max_frames`` frames shown) in ``report.html``. Returns
    ``{"png": path, "html": path}``, or ``None`` when matplotlib is missing.
    """
    if not have_matplotlib():
        print("kinfunc: matplotlib not installed, report skipped (pip install 'kinfunc[report]')", file=sys.stderr)
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .fk import fk, marker_positions
    from .model import Motion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = result.model.to(device="cpu", dtype=torch.float64)
    topo = model.topology
    q = _np(result.q)
    t = _np(result.time)
    ref = None
    if reference is not None:
        from .io import read_mot

        ref = read_mot(reference) if isinstance(reference, (str, Path)) else reference

    rot = [i for i, mo in enumerate(topo.coordinate_motion) if mo is Motion.ROTATIONAL and not topo.coordinate_locked[i]]
    n_ang = len(rot)
    ncol = 4
    nrow_ang = math.ceil(n_ang / ncol)
    fig = plt.figure(figsize=(16, 2.6 * nrow_ang + 8.0), dpi=80)
    gs = fig.add_gridspec(nrow_ang + 2, ncol, height_ratios=[1.0] * nrow_ang + [1.2, 2.2], hspace=0.6, wspace=0.28,
                          top=0.93, bottom=0.03, left=0.05, right=0.98)
    for k, i in enumerate(rot):
        ax = fig.add_subplot(gs[k // ncol, k % ncol])
        name = topo.coordinate_names[i]
        ax.plot(t, np.degrees(q[:, i]), color="C0", lw=1.6, label="kinfunc")
        if ref is not None and name in ref.names:
            rv = _np(ref.values[:, ref.names.index(name)])
            ax.plot(_np(ref.time), np.degrees(rv), color="C1", lw=1.2, ls="--", label=reference_label)
        lo, hi = ax.get_ylim()
        if hi - lo < 2.0:  # a flat curve: do not magnify numerical noise
            mid = 0.5 * (lo + hi)
            ax.set_ylim(mid - 1.0, mid + 1.0)
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=8)
        if k % ncol == 0:
            ax.set_ylabel("deg", fontsize=8)
        if k == 0:
            ax.legend(fontsize=7, loc="best")
    # marker RMS per frame
    rms = _np(result.marker_rms) * 1e3
    mx = _np(result.marker_max) * 1e3
    ax = fig.add_subplot(gs[nrow_ang, :2])
    ax.plot(t, rms, color="C0", label="RMS")
    ax.plot(t, mx, color="C3", lw=0.8, alpha=0.7, label="max")
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("marker error (mm)", fontsize=8)
    ax.set_title(f"marker error per frame (mean RMS {np.nanmean(rms) if np.isfinite(rms).any() else float('nan'):.1f} mm)",
                 fontsize=10)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=8)
    # per-marker error bars
    err = _np(result.marker_error) * 1e3  # (T, M)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # markers never seen: NaN bars, no noise
        per = np.sqrt(np.nanmean(err**2, 0))
        p95 = np.nanpercentile(err, 95, axis=0) if np.isfinite(err).any() else per
    ax = fig.add_subplot(gs[nrow_ang, 2:])
    names = list(result.marker_names)
    xs = np.arange(len(names))
    ax.bar(xs, per, color="C0", label="RMS")
    ax.scatter(xs, p95, color="C3", s=10, zorder=3, label="95th pct")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=90, fontsize=6 if len(names) > 25 else 7)
    ax.set_ylabel("mm", fontsize=8)
    ax.set_title("error per marker", fontsize=10)
    ax.legend(fontsize=7)
    ax.tick_params(axis="y", labelsize=8)
    # stick figures at a few frames
    T = q.shape[0]
    frames = sorted(set(int(round(f)) for f in np.linspace(0, T - 1, 4)))[:ncol]
    qt = torch.from_numpy(q[frames])
    poses = fk(model, qt)
    origins = _np(poses.t)  # (F, B, 3)
    um = model.with_markers(names)
    mk = _np(marker_positions(um, qt))  # (F, M, 3)
    meas = None
    if trial is not None:
        tx = _np(trial.xyz)
        cols = [trial.names.index(n) if n in trial.names else -1 for n in names]
        tt = _np(trial.time)
        idx = [int(np.argmin(np.abs(tt - t[f]))) for f in frames]
        meas = np.full((len(frames), len(names), 3), np.nan)
        for j, c in enumerate(cols):
            if c >= 0:
                meas[:, j] = tx[idx, c]
    for k, f in enumerate(frames):
        ax = fig.add_subplot(gs[nrow_ang + 1, k], projection="3d")
        o = origins[k]
        # OpenSim frame: Y up; draw with Y as the vertical axis (matplotlib's z)
        P = lambda a: (a[..., 0], a[..., 2], a[..., 1])  # noqa: E731
        for b, p in enumerate(topo.parents):
            if p >= 0:
                seg = np.stack([o[p], o[b]])
                ax.plot(*P(seg), color="k", lw=2)
        ax.scatter(*P(o), color="k", s=12)
        ax.scatter(*P(mk[k]), facecolors="none", edgecolors="C0", s=30, label="model markers", depthshade=False)
        if meas is not None:
            ax.scatter(*P(meas[k]), color="C3", s=8, label="measured", depthshade=False)
        allp = np.concatenate([o, mk[k]] + ([meas[k][np.isfinite(meas[k]).all(1)]] if meas is not None else []))
        c = allp.mean(0)
        r = max(0.5 * float(np.ptp(allp, 0).max()), 0.3)
        ax.set_xlim(c[0] - r, c[0] + r)
        ax.set_ylim(c[2] - r, c[2] + r)
        ax.set_zlim(c[1] - r, c[1] + r)
        ax.set_xlabel("X fwd", fontsize=7)
        ax.set_ylabel("Z right", fontsize=7)
        ax.set_zlabel("Y up", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=12, azim=-60)
        ax.set_title(f"t = {t[f]:.2f} s", fontsize=9)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    head = title or f"{getattr(result, 'solver', 'IK')} fit={'+'.join(getattr(result, 'fit', ()))}"
    fig.suptitle(f"kinfunc IK report: {head}\n{result.summary() if hasattr(result, 'summary') else ''}", fontsize=11)
    png = out / "report.png"
    fig.savefig(png, bbox_inches="tight")
    plt.close(fig)

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{per[j]:.2f}</td><td>{p95[j]:.2f}</td>"
        f"<td>{100 * float(_np(result.coverage)[j]):.0f}%</td></tr>"
        for j, n in enumerate(names)
    )
    summary = html.escape(result.summary()) if hasattr(result, "summary") else ""
    q = getattr(result, "quality", None)
    quality = ""
    if q is not None:
        items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in q.lines(result.time, max_lines=50)[1:])
        quality = f"<h2>Fit quality</h2><p>{html.escape(q.summary())}</p>" + (f"<ul>{items}</ul>" if items else "")
    from .viewer import viewer_html

    motion = viewer_html(model, result, trial, max_frames=max_frames, title=head, reference=ref,
                         reference_label=reference_label) if viewer else ""
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kinfunc IK report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>kinfunc IK report</h1>
<p>{summary}</p>
<p>Model: {html.escape(topo.name)} ({topo.n_bodies} bodies, {topo.n_coordinates} coordinates);
frames: {T}; time {t[0]:.3f}&ndash;{t[-1]:.3f} s{'; reference: ' + html.escape(str(getattr(ref, 'source', '') or reference_label)) if ref is not None else ''}.</p>
{'<h2>Motion</h2>' + motion if motion else ''}
<h2>Plots</h2>
<img src="report.png" style="max-width:100%" alt="joint angles, marker errors and stick figures">
{quality}
<h2>Marker errors (mm)</h2>
<table><tr><th>marker</th><th>RMS</th><th>95th percentile</th><th>coverage</th></tr>{rows}</table>
</body></html>
"""
    page = out / "report.html"
    page.write_text(doc, encoding="utf-8")
    return {"png": png, "html": page}
