"""Automatic scaling: a generic model fitted to a subject from a static and/or motion trials.

Built on :func:`kinfunc.ik.solve`'s options:

* :func:`scale_subject`: the staged recipe. 1) scales (per axis, left = right), marker offsets
  (anatomical markers, flagged ``fixed`` in the model, held) and poses on a few hundred frames
  spread over the static and the walks, scale priors firm only for bodies with fewer than 3
  markers (:func:`scale_prior_weights`); 2) the poses of every frame with that model (a
  pose-only solve: frames independent, no shared parameters), started from the shape fit's
  poses interpolated in time, so neither the shape fit nor a segment sweep grows with the
  length of the trials.
* :func:`marker_pair_scales`: an optional start for every body's scale from marker-pair
  distances, measured / model (OpenSim ScaleTool-style "measurements", with the pairs found
  from the model: two markers on one body, or on a body and its parent; the model posed by a
  quick IK on a few frames, so no static trial and no pair list are needed).
* :func:`model_height`: a model's standing height (sole to vertex, m), which ``height=``
  (:func:`kinfunc.ik.solve`, :func:`scale_subject`) uses for a prior on the scales: the
  generic proportions scaled to the subject's height.

``bench/bench_scaling.py`` measures it on the arnold2013synthetic data (generic model + walking
markers -> coordinates against the truth) and shows where the time goes (docs/ik.md).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor

from ..fk import fk, marker_positions
from ..model import Model
from ..trial import MarkerTrial, linear_brackets
from .setup import IKError
from .solve import _side_key, solve

__all__ = ["PairScales", "SubjectFit", "check_height", "marker_pair_scales", "model_height", "scale_prior_weights",
           "subsample_trials", "scale_subject"]

# --------------------------------------------------------------------------- standing height
HEIGHT_RANGE = (0.3, 3.0)  # metres: what ``height=`` accepts
HEAD_VERTEX = (0.030, 0.245, 0.0)  # the vertex of the head in a head frame at C7/T1 (kinfunc's full body, m)


def check_height(height: Any) -> float:
    """``height`` (the subject's standing height, m) as a float, or an :class:`IKError` naming
    the value and the fix: it must be a finite number in metres between 0.3 and 3 (1620 or 162
    are millimetres or centimetres)."""
    try:
        h = float(height)
    except (TypeError, ValueError):
        raise IKError(f"height={height!r}: give the subject's standing height as a number in metres (e.g. 1.62)") from None
    lo, hi = HEIGHT_RANGE
    if not math.isfinite(h) or h <= 0:
        raise IKError(f"height={height!r}: the standing height must be a positive number in metres (e.g. 1.62)")
    if h > hi:
        unit = "millimetres" if h >= 300 else "centimetres"
        raise IKError(f"height={h:g}: height is in metres; this looks like {unit} (give e.g. {h / (1000 if h >= 300 else 100):.2f})")
    if h < lo:
        raise IKError(f"height={h:g}: height is in metres and must be at least {lo} m (a standing human); "
                      "give the subject's standing height, e.g. 1.62")
    return h


def _named(model: Model, *names: str) -> list[int]:
    low = [n.lower() for n in model.body_names]
    return [low.index(n) for n in names if n in low]


@functools.lru_cache(maxsize=1)
def _reference_ratios() -> tuple[float, float]:
    """Standing height of kinfunc's full-body model over its floor-to-shoulder and
    floor-to-hip heights (the proportions used where a model has no head or no arms)."""
    from ..models import full_body

    ref = full_body("coco17", dtype=torch.float64)
    with torch.no_grad():
        y = fk(ref, ref.default_q()).t[:, 1]
    floor = float(y.min())
    h = _model_height(ref, ref.default_q())[0]
    shoulder = float(y[_named(ref, "humerus_r", "humerus_l")].mean()) - floor
    hip = float(y[_named(ref, "femur_r", "femur_l")].mean()) - floor
    return h / shoulder, h / hip


def _model_height(model: Model, q: Tensor) -> tuple[float, str]:
    with torch.no_grad():
        poses = fk(model, q.to(model.dtype))
        y = poses.t[:, 1].to(torch.float64)
        floor = float(y.min())
        head = _named(model, "head")
        if head:
            b = head[0]
            s = (model.global_scale * model.body_scales[b]).to(torch.float64)
            p = torch.tensor(HEAD_VERTEX, dtype=torch.float64) * s
            top = float(poses.t[b, 1].to(torch.float64) + (poses.R[b].to(torch.float64) @ p)[1])
            return top - floor, "head vertex"
    shoulders = _named(model, "humerus_r", "humerus_l", "humerus")
    hips = _named(model, "femur_r", "femur_l", "femur")
    r_shoulder, r_hip = _reference_ratios()
    if shoulders:
        return (float(y[shoulders].mean()) - floor) * r_shoulder, "shoulders"
    if hips:
        return (float(y[hips].mean()) - floor) * r_hip, "hips"
    raise IKError(f"model_height: cannot tell the standing height of {model.topology.name!r}: it has no body named "
                  "head, humerus_r/_l or femur_r/_l; give the prior's target as scale_target= instead of height=")


def model_height(model: Model, q: Optional[Tensor] = None) -> float:
    """The model's standing height (m, a float): the vertical distance from the sole to the
    vertex of the head at the pose ``q (C,)`` (default ``model.default_q()``: every coordinate at
    its default, which stands upright in OpenSim's and kinfunc's models), with the model's
    current scales (``global_scale * body_scales``).

    The vertical axis is Y (OpenSim's and kinfunc's up). Only the skeleton counts, not the
    markers (their offsets are fitted and a keypoint set need not reach the feet or the top of
    the head), so the height follows the scales alone and scaling every body by ``s`` scales it
    by ``s``:

    * sole: the lowest body origin (the calcaneus and toes origins of OpenSim's and kinfunc's
      feet lie within about 1.5 cm of the sole);
    * vertex: for a model with a body named ``head`` (kinfunc's full body: its origin is the
      neck joint at C7/T1), the point ``(0.030, 0.245, 0)`` m of the head frame (the
      ``head_top`` landmark; de Leva's cervicale-to-vertex length), scaled with the head.
      Without a head body (OpenSim's Rajagopal/Hamner models carry the head on the torso), the
      floor-to-shoulder height (mean origin of ``humerus_r``/``humerus_l``) times the ratio of
      kinfunc's full-body model (about 1.22); without arms, the floor-to-hip height (``femur_r``/
      ``femur_l`` origins) times the full-body ratio (about 1.95).

    kinfunc's full-body model stands about 1.69 m; OpenSim's generic Rajagopal model about
    1.68 m. Raises :class:`~kinfunc.ik.IKError` for a model with none of those bodies.
    """
    return _model_height(model, model.default_q() if q is None else q)[0]


def height_scale_ratio(model: Model, height: Any) -> float:
    """``height / model_height(model)`` (``height`` checked by :func:`check_height`): the factor
    that takes the model's scales to the subject's size."""
    return check_height(height) / model_height(model)


def subsample_trials(trials: Sequence[MarkerTrial], n: int, first_weight: float = 1.0) -> list[MarkerTrial]:
    """At most ``n`` frames in all, spread evenly over each trial, in proportion to its length
    (``first_weight`` scales the first trial's share, e.g. a static trial whose frames are all
    alike needs few). Every trial keeps at least 2 frames. Returns new :class:`MarkerTrial` s
    (same names, the chosen rows of ``xyz`` and ``time``)."""
    lens = [t.n_frames for t in trials]
    w = [float(L) * (first_weight if k == 0 else 1.0) for k, L in enumerate(lens)]
    tot = sum(w)
    out = []
    for t, L, wk in zip(trials, lens, w):
        k = min(L, max(2, int(round(n * wk / tot)))) if tot > 0 else min(L, 2)
        idx = torch.linspace(0, L - 1, k).round().long().unique()
        out.append(dataclasses.replace(t, xyz=t.xyz.index_select(0, idx), time=t.time.index_select(0, idx)))
    return out


@dataclasses.dataclass(frozen=True)
class PairScales:
    """Result of :func:`marker_pair_scales`: ``body_scales (B, 3)`` (uniform per body, the
    model's dtype), ``overall`` (median ratio over all pairs), per body the number of pairs that
    saw it (``seen``, 0 = set to ``overall``), and the pairs used
    ``(marker_a, marker_b, measured m, model m, ratio)``."""

    body_scales: Tensor
    overall: float
    seen: dict
    pairs: list


def marker_pair_scales(
    model: Model,
    trials: Union[MarkerTrial, Sequence[MarkerTrial]],
    *,
    frames: int = 40,
    anatomical_only: Optional[bool] = None,
    min_length: float = 0.04,
    symmetric: bool = True,
    prior_weight: float = 0.05,
    q: Optional[Tensor] = None,
) -> PairScales:
    """Per-body scale factors ``measured distance / model distance`` of marker pairs.

    Pairs: two markers on one body (a rigid distance: the ratio is that body's scale), or one on
    a body and one on its parent (the ratio mixes both bodies, split by how far each marker is
    from the joint centre between them: ``r = (a s_parent + b s_child) / (a + b)``). Pairs
    shorter than ``min_length`` in the model are skipped. ``anatomical_only`` (default: when
    the model flags some markers ``fixed``): use only those (their placement on the bone is
    what the generic model states; tracking-cluster markers can be anywhere).

    The model is posed on ``frames`` frames spread over the trials by a pose-only
    :func:`kinfunc.ik.solve` (or at ``q (F, C)`` for those frames, e.g. a static pose), the
    measured and model distances compared frame by frame (median ratio per pair), and the
    bodies' scales solved by least squares over the pairs, with a weak pull
    (``prior_weight``) towards the median ratio of all pairs, which is where a body that no
    pair sees ends. ``symmetric``: ``*_r`` / ``*_l`` bodies averaged.
    """
    trials = [trials] if isinstance(trials, MarkerTrial) else list(trials)
    topo = model.topology
    names = [m for m in topo.marker_names if any(m in t.names for t in trials)]
    if anatomical_only is None:
        anatomical_only = any(topo.marker_fixed[topo.marker_index(m)] for m in names)
    if anatomical_only:
        names = [m for m in names if topo.marker_fixed[topo.marker_index(m)]]
    sub = subsample_trials(trials, frames)
    if q is None:
        res = solve(model, sub, fit=("pose",), restarts=False)
        q = torch.cat([r.q for r in res], 0)
    q = q.to(model.dtype)
    X = []
    for t in sub:
        cols = [t.names.index(m) if m in t.names else -1 for m in names]
        x = torch.full((t.n_frames, len(names), 3), math.nan, dtype=model.dtype)
        have = [j for j, c in enumerate(cols) if c >= 0]
        x[:, have] = t.xyz[:, [cols[j] for j in have]].to(model.dtype)
        X.append(x)
    X = torch.cat(X, 0)  # (F, N, 3) measured
    mi = [topo.marker_index(m) for m in names]
    with torch.no_grad():
        poses = fk(model, q)
        P = marker_positions(model, q, poses)[:, mi]  # (F, N, 3) model
        s_body = model.global_scale * model.body_scales
        jc = poses.t + (poses.R @ (model.child_location * s_body)[..., None])[..., 0]  # (F, B, 3)
    body = [topo.marker_bodies[i] for i in mi]
    parents = topo.parents
    B = topo.n_bodies
    rows, rhs, wts, pairs = [], [], [], []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            ba, bb = body[a], body[b]
            if ba == bb:
                coef = {ba: 1.0}
            elif parents[bb] == ba or parents[ba] == bb:
                child = bb if parents[bb] == ba else ba
                par = parents[child]
                pm, cm = (a, b) if body[a] == par else (b, a)
                dp = torch.linalg.vector_norm(P[:, pm] - jc[:, child], dim=-1).median()
                dc = torch.linalg.vector_norm(P[:, cm] - jc[:, child], dim=-1).median()
                coef = {par: float(dp / (dp + dc)), child: float(dc / (dp + dc))}
            else:
                continue
            dm = torch.linalg.vector_norm(P[:, a] - P[:, b], dim=-1)
            dx = torch.linalg.vector_norm(X[:, a] - X[:, b], dim=-1)
            ok = torch.isfinite(dx) & (dm > min_length)
            if int(ok.sum()) == 0:
                continue
            ratio = float((dx[ok] / dm[ok]).median())
            row = torch.zeros(B, dtype=torch.float64)
            for k, v in coef.items():
                row[k] = v
            rows.append(row)
            rhs.append(ratio)
            wts.append(float(dm[ok].median()))  # longer pairs weigh more
            pairs.append((names[a], names[b], float(dx[ok].median()), float(dm[ok].median()), ratio))
    base = (model.global_scale * model.body_scales).mean(-1).to(torch.float64)
    if not rows:
        return PairScales(model.body_scales.clone(), 1.0, {n: 0 for n in topo.body_names}, [])
    A = torch.stack(rows)
    r = torch.tensor(rhs, dtype=torch.float64)
    w = torch.tensor(wts, dtype=torch.float64).sqrt()
    overall = float(r.median())
    seen = {topo.body_names[k]: int((A[:, k] > 0).sum()) for k in range(B)}
    # weighted least squares with a ridge towards the overall ratio (scales relative to `base`)
    lam = prior_weight * float((w * w).mean())
    H = (A * w[:, None] ** 2).T @ A + lam * torch.eye(B, dtype=torch.float64)
    g = (A * w[:, None] ** 2).T @ r + lam * overall
    s = torch.linalg.solve(H, g)
    if symmetric:
        groups: dict[str, list[int]] = {}
        for k, n in enumerate(topo.body_names):
            groups.setdefault(_side_key(n), []).append(k)
        for members in groups.values():
            s[members] = s[members].mean()
    scales = (s * base / model.global_scale.to(torch.float64))[:, None].expand(B, 3)
    return PairScales(scales.to(model.body_scales).clone(), overall, seen, pairs)


def scale_prior_weights(
    model: Model, markers: Sequence[str], weak: float = 1e-4, firm: float = 1e-2, min_markers: int = 3
) -> dict[str, float]:
    """``scale_weight`` per body for :func:`kinfunc.ik.solve`: ``weak`` for bodies carrying at
    least ``min_markers`` of ``markers`` (their scales, per axis, are seen by the data), ``firm``
    for the others (a talus, patella or hand without markers, a foot with one or two), whose
    scales then stay near the prior's target where the data say little."""
    used = set(markers)
    count = [0] * model.topology.n_bodies
    for m, b in zip(model.marker_names, model.topology.marker_bodies):
        if m in used:
            count[b] += 1
    return {n: (weak if count[k] >= min_markers else firm) for k, n in enumerate(model.body_names)}


def _interpolate(ts: Tensor, qs: Tensor, t: Tensor) -> Tensor:
    """``qs (n, C)`` at sorted times ``ts (n,)``, linearly interpolated at ``t (T,)`` (held
    constant beyond the ends)."""
    if ts.numel() == 1:
        return qs.expand(t.shape[0], -1).clone()
    i0, i1, w = linear_brackets(ts.contiguous(), t.contiguous())
    return qs[i0] + w[:, None] * (qs[i1] - qs[i0])


@dataclasses.dataclass
class SubjectFit:
    """Result of :func:`scale_subject`: the fitted ``model``, one pose-only
    :class:`~kinfunc.ik.IKResult` per input trial (``results``, static first when given), the
    start (``start``: a :class:`PairScales`) and the wall time of each stage (s)."""

    model: Model
    results: list
    start: Optional[PairScales]
    times: dict


def scale_subject(
    model: Model,
    trials: Union[MarkerTrial, Sequence[MarkerTrial]],
    static: Optional[MarkerTrial] = None,
    *,
    shape_frames: int = 300,
    static_frames: int = 20,
    pair_start: bool = False,
    prior: str = "generic",
    height: Optional[float] = None,
    scale_mode: str = "per_axis",
    symmetric: bool = True,
    scale_weight: Union[float, Mapping[str, float], None] = None,
    offset_weight: Union[float, Mapping[str, float]] = 1.0,
    pose_start: str = "segments",
    pose_options: Optional[Mapping[str, Any]] = None,
    **shape_options: Any,
) -> SubjectFit:
    """Scales + marker offsets from a static (optional) and walking trials, then every frame's pose.

    1. ``pair_start``: the model scaled to :func:`marker_pair_scales` (measured on the static
       when given, else on frames of the trials) before the shape fit. ``prior``: the scale
       prior's target: ``"generic"`` (the generic model's own scales: its proportions),
       ``"overall"`` (every body at the median pair ratio: the generic proportions at the
       subject's size) or ``"start"`` (each body at its pair estimate). Without ``pair_start``
       the fit starts from, and is pulled towards, the generic model's scales. On the
       arnold2013synthetic walks the pair start reaches the same fit as the generic start, and
       the ``"generic"`` target beats the other two (bench/bench_scaling.py). ``height``: the
       subject's standing height (m): the target becomes the generic proportions at that
       height (every body's generic scale times ``height / model_height(model)``, see
       :func:`model_height`), so bodies the markers see little of take the subject's size
       rather than the generic model's; only with ``prior="generic"``.
    2. Shape fit: ``fit=("pose", "segment_scales", "marker_offsets")`` on ``static_frames``
       frames of the static plus ``shape_frames`` frames spread over the trials
       (``scale_mode``, ``symmetric``, ``scale_weight`` (default :func:`scale_prior_weights`:
       1e-4 for bodies with 3 markers or more, 1e-2 for the others), ``offset_weight`` and
       ``shape_options`` passed on; markers the model flags ``fixed`` keep their offsets).
    3. Poses: a pose-only solve of every frame of every trial (static included) with the
       fitted model (``pose_options`` passed on, e.g. ``smoothness``). ``pose_start``:
       ``"segments"`` (default): the solver's own start (segment sweep + restarts: any motion);
       ``"interpolate"``: every frame from the shape fit's poses interpolated linearly in time
       (faster on long trials of smooth motion; :func:`kinfunc.ik.solve` makes no restarts
       from a given ``init``).
    """
    trials = [trials] if isinstance(trials, MarkerTrial) else list(trials)
    times = {}
    t0 = time.perf_counter()
    start = None
    m0 = model
    if height is not None:
        if prior != "generic":
            raise IKError(f"height= sets the scale prior's target (the generic proportions at that height); "
                          f"leave prior='generic' (got prior={prior!r})")
        if "scale_target" in shape_options:
            raise IKError("give height= or scale_target=, not both")
        size = height_scale_ratio(model, height)
        # the generic model's scales at the subject's height (the start may be the pair estimate)
        shape_options["scale_target"] = {n: float(v) * size for n, v in zip(model.body_names, model.body_scales.mean(-1))}
    if pair_start:
        start = marker_pair_scales(model, [static] if static is not None else trials, symmetric=symmetric)
        m0 = model.replace(body_scales=start.body_scales)
        if "scale_target" not in shape_options and prior == "overall":
            shape_options["scale_target"] = start.overall
        elif "scale_target" not in shape_options and prior == "generic":
            shape_options["scale_target"] = {n: float(v) for n, v in zip(model.body_names, model.body_scales.mean(-1))}
    times["pair_start"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    sub = subsample_trials(trials, shape_frames)
    if scale_weight is None:
        present = set().union(*(t.names for t in trials + ([static] if static is not None else [])))
        scale_weight = scale_prior_weights(model, [m for m in model.marker_names if m in present])
    if static is not None:
        sub = subsample_trials([static], static_frames) + sub
    shape = solve(
        m0, sub, fit=("pose", "segment_scales", "marker_offsets"), scale_mode=scale_mode, symmetric=symmetric,
        scale_weight=scale_weight, offset_weight=offset_weight, shape_frames=0, **shape_options,
    )
    fitted = shape[0].model
    times["shape_fit"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    every = ([static] if static is not None else []) + trials
    popt = dict(pose_options or {})
    if pose_start == "interpolate" and "init" not in popt:
        popt["init"] = torch.cat([_interpolate(r.time, r.q, t.time.to(r.q)) for r, t in zip(shape, every)], 0)
    results = solve(fitted, every, fit=("pose",), **popt)
    times["poses"] = time.perf_counter() - t2
    times["total"] = time.perf_counter() - t0
    return SubjectFit(fitted, results, start, times)
