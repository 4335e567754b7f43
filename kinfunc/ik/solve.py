"""Whole-trial IK: :func:`solve` and :class:`IKResult`.

Time is a batch axis: every frame of every trial is one block of a single least-squares
problem (see :mod:`kinfunc.ik.problem`), solved by batched Gauss-Newton/Levenberg-Marquardt
(:mod:`kinfunc.ik.gn`, the default) or L-BFGS over everything (:mod:`kinfunc.ik.lbfgs`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
import time as _time
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor

from ..fk import full_coordinates
from ..model import Model, Motion
from ..trial import MarkerTrial
from .gn import GNOptions, GNResult, _frame_subset, frame_costs, solve_gn
from .init import initial_q
from .repair import fill_unobserved, repair, unobserved
from .start import continuous_in_time, segment_start
from .jacobian import ModelKinematics
from .lbfgs import LBFGSOptions, solve_lbfgs
from .quality import FitQuality, assess
from .problem import IKProblem, coupling_cost, expand_q, unpack_model
from .setup import CoordinateTask, IKError, IKSetup, coordinate_targets

__all__ = ["IKError", "IKResult", "FIT_GROUPS", "build_problem", "solve"]

log = logging.getLogger("kinfunc.ik")

FIT_GROUPS = ("pose", "global_scale", "segment_scales", "marker_offsets")


@dataclasses.dataclass(frozen=True)
class IKResult:
    """Result of :func:`solve` for one trial.

    * ``q (T, C)``: coordinates (rad / m) in ``model.coordinate_names`` order, locked ones included.
    * ``model``: the fitted model (all of the input model's markers; scales/offsets fitted
      where asked), in the solve dtype.
    * ``time (T,)`` seconds; ``marker_names`` (``M`` markers used, model order).
    * ``marker_error (T, M)``: distance model marker - measured marker (m), NaN where missing.
    * ``marker_rms (T,)``, ``marker_max (T,)``: over the markers present in each frame (m).
    * ``marker_rms_per_marker (M,)`` over frames (m); ``coverage (M,)`` fraction of frames present.
    * ``iterations``, ``objective`` (final total objective of the whole solve, the sum of all
      squared weighted residuals), ``marker_objective`` (this trial's weighted squared marker
      distances, m²), ``converged``, ``wall_time`` (s, the whole solve), ``solver``.
    * ``unused_trial_markers``: trial markers not in the model (or with zero weight);
      ``missing_model_markers``: model markers the trial lacks (or not in the setup's weights).
    * ``quality``: a :class:`~kinfunc.ik.quality.FitQuality` (doubtful frames and markers,
      marker issues with their reasons, frames restarted from neighbours);
      ``frame_flags (T,)`` and ``marker_flags (M,)`` are its flags.
    """

    q: Tensor
    model: Model
    time: Tensor
    marker_names: tuple[str, ...]
    marker_error: Tensor
    marker_rms: Tensor
    marker_max: Tensor
    marker_rms_per_marker: Tensor
    coverage: Tensor
    iterations: int
    objective: float
    marker_objective: float
    converged: bool
    wall_time: float
    solver: str
    fit: tuple[str, ...]
    unused_trial_markers: tuple[str, ...] = ()
    missing_model_markers: tuple[str, ...] = ()
    history: tuple[float, ...] = ()
    report: Any = dataclasses.field(default=None, repr=False, compare=False)  # FitQuality, or the call that makes it

    @property
    def coordinate_names(self) -> tuple[str, ...]:
        return self.model.coordinate_names

    @property
    def quality(self) -> Optional[FitQuality]:
        """The :class:`~kinfunc.ik.quality.FitQuality` of this result, made from its marker
        errors the first time it is asked for (a solve in a loop that never reads it does not
        pay for it)."""
        if callable(self.report):
            object.__setattr__(self, "report", self.report())  # made once; the result stays the same value
        return self.report

    @property
    def frame_flags(self) -> Tensor:
        """``(T,)`` bool: frames whose fit is doubtful (see :mod:`kinfunc.ik.quality`)."""
        return self.quality.frame_flags

    @property
    def marker_flags(self) -> Tensor:
        """``(M,)`` bool: markers whose error is large through the trial."""
        return self.quality.marker_flags

    def summary(self) -> str:
        """One line: frames, markers, mean/max marker error (mm), iterations, wall time."""
        rms = self.marker_rms[torch.isfinite(self.marker_rms)]
        mx = self.marker_max[torch.isfinite(self.marker_max)]
        return (
            f"IK ({self.solver}, fit={'+'.join(self.fit)}): {self.q.shape[0]} frames, "
            f"{len(self.marker_names)} markers, "
            f"mean RMS {1e3 * float(rms.mean()) if rms.numel() else float('nan'):.2f} mm, "
            f"max {1e3 * float(mx.max()) if mx.numel() else float('nan'):.2f} mm, "
            f"{self.iterations} iterations, {self.wall_time:.3f} s"
            + ("" if self.quality is None or self.quality.ok else
               f"; {int(self.quality.frame_flags.sum())} doubtful frames, {int(self.quality.marker_flags.sum())} doubtful markers, "
               f"{len(self.quality.issues)} marker issues")
        )


# ----------------------------------------------------------------------------------------
def _per_name(
    value: Union[float, Mapping[str, float], None], names: Sequence[str], default: float, what: str
) -> list[float]:
    if value is None:
        return [default] * len(names)
    if isinstance(value, Mapping):
        out = [float(value.get(n, default)) for n in names]
    else:
        out = [float(value)] * len(names)
    bad = [n for n, v in zip(names, out) if not (v >= 0 and math.isfinite(v))]
    if bad:
        raise IKError(f"{what}: weights must be finite and >= 0; bad for {bad}")
    return out


def _side_key(name: str) -> str:
    """Body name with a left/right mark removed (``femur_r`` -> ``femur_#``)."""
    return re.sub(r"(^|_)(r|l)(_|$)", r"\1#\3", name)


def _root_rotations(topo) -> set[int]:
    """Independent coordinates that drive the root joint's rotation slots."""
    out: set[int] = set()
    for g in topo.slot_groups:  # output k (flat slot joint * 6 + slot) is driven by input k
        out.update(i for o, i in zip(g.outputs, g.inputs)
                   if o < 3 and i < topo.n_coordinates and topo.coordinate_motion[i] is Motion.ROTATIONAL)
    return out


def _smoothness_weights(topo, free_idx: Sequence[int], smoothness) -> Tensor:
    """Smoothness weight of each free coordinate ``(Cf,)`` (float64).

    A number applies to every free coordinate except the root's rotations: the root's
    orientation is fixed by its own markers, and its Euler angles are singular where the body
    lies or turns over (the middle angle at +-90 deg), where smoothing them in time would bias
    the fit. A mapping gives each named coordinate its weight (others 0)."""
    names = [topo.coordinate_names[i] for i in free_idx]
    if isinstance(smoothness, Mapping):
        bad = [n for n in smoothness if n not in topo.coordinate_names]
        if bad:
            raise IKError(f"smoothness: unknown coordinate(s) {bad}; known: {', '.join(topo.coordinate_names)}")
        w = [float(smoothness.get(n, 0.0)) for n in names]
    else:
        root = _root_rotations(topo)
        w = [0.0 if i in root else float(smoothness) for i in free_idx]
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise IKError(f"smoothness: weights must be finite and >= 0 (got {smoothness!r})")
    return torch.tensor(w, dtype=torch.float64)


def _height_ratio(model: Model, height, fit: tuple[str, ...], scale_target) -> float:
    """The factor ``height / model_height(model)`` that the scale prior's target takes the
    model's scales by (1.0 without ``height``); see :func:`kinfunc.ik.scaling.model_height`."""
    if height is None:
        return 1.0
    from .scaling import height_scale_ratio  # scaling builds on this module

    if "global_scale" not in fit and "segment_scales" not in fit:
        raise IKError(f"height={height!r} is a prior on the scales; fit 'segment_scales' or 'global_scale' with it "
                      f"(fit={fit})")
    if scale_target is not None:
        raise IKError("give height= or scale_target=, not both: height sets the scale prior's target "
                      "(the model's proportions at the subject's height)")
    return height_scale_ratio(model, height)


@dataclasses.dataclass(frozen=True)
class ProblemInfo:
    """What :func:`build_problem` knows besides the tensors of the problem.

    ``markers``: the ``M`` markers used (model order); ``used_marker_index``: their indices in
    the full model; ``frames``: frames per trial; ``unused`` / ``missing``: per trial, trial
    markers the model lacks and used markers the trial lacks; ``theta0 (K, P)``: starting
    shared parameters; ``free_index``: coordinate index of each free coordinate; ``model_full``:
    the model as given (all markers); ``trials``: the trials (time range applied)."""

    markers: tuple[str, ...]
    used_marker_index: Any
    frames: tuple[int, ...]
    unused: tuple
    missing: tuple
    theta0: Tensor
    free_index: tuple[int, ...]
    model_full: Model
    trials: tuple


def build_problem(
    model: Model,
    trials: Sequence[MarkerTrial],
    fit: Sequence[str] = ("pose",),
    setup: Optional[IKSetup] = None,
    *,
    marker_weights: Optional[Mapping[str, float]] = None,
    coordinate_tasks: Optional[Mapping[str, CoordinateTask]] = None,
    limits: str = "clamped",
    limit_weight: float = 1e4,
    smoothness: Union[float, Mapping[str, float]] = 0.0,
    scale_mode: str = "uniform",
    scale_bodies: Optional[Sequence[str]] = None,
    symmetric: bool = False,
    scale_target: Union[float, Mapping[str, float], None] = None,
    scale_weight: Union[float, Mapping[str, float]] = 1.0,
    height: Optional[float] = None,
    offset_weight: Union[float, Mapping[str, float]] = 1.0,
    offset_axes: Optional[Mapping[str, Sequence[bool]]] = None,
    shared: bool = True,
    dtype: torch.dtype = torch.float64,
    device: Any = None,
    kinematics: Optional[ModelKinematics] = None,
) -> tuple[IKProblem, ProblemInfo]:
    """Assemble the :class:`~kinfunc.ik.problem.IKProblem` for :func:`solve` (same arguments).

    Returns the problem and its :class:`ProblemInfo` (markers used, frames per trial, unmatched
    names, ``theta0 (K, P)``, free coordinates).
    """
    fit = tuple(fit)
    bad = [f for f in fit if f not in FIT_GROUPS]
    if bad:
        raise IKError(f"fit: unknown group(s) {bad}; choose from {FIT_GROUPS}")
    if limits not in ("clamped", "all", "none"):
        raise IKError(f"limits='{limits}': use 'clamped' (coordinates flagged clamped), 'all' or 'none'")
    if scale_mode not in ("uniform", "per_axis"):
        raise IKError(f"scale_mode='{scale_mode}': use 'uniform' or 'per_axis'")
    if not trials:
        raise IKError("no trials given; pass a kinfunc.MarkerTrial (or a list of them)")
    setup = setup or IKSetup()
    model = model.to(device=device, dtype=dtype)
    topo = model.topology
    size = _height_ratio(model, height, fit, scale_target)  # model scales -> subject's height (1: no height)
    if setup.time_range is not None:
        t0, t1 = setup.time_range
        trials = [tr.slice(t0, t1) for tr in trials]
    for tr in trials:
        if tr.n_frames == 0:
            raise IKError(f"{_source(tr)}: no frames (time range {setup.time_range}); check the setup's time_range")

    used, weights, unused_by_trial, missing_by_trial = _used_markers(topo, trials, setup, marker_weights)
    um = model.with_markers(used)
    kin = ModelKinematics(um) if kinematics is None else kinematics.for_model(um)
    kw = dict(dtype=dtype, device=um.device)
    w = torch.tensor([1.0 if weights is None else float(weights[m]) for m in used], **kw)
    X, present, trial_id = _stack_trials(trials, used, dtype, um.device)
    K = 1 if shared else len(trials)

    C = topo.n_coordinates
    free_idx = [i for i in range(C) if not topo.coordinate_locked[i]]
    if not free_idx and "pose" in fit:
        raise IKError("every coordinate of the model is locked; unlock some or fit only shape parameters")
    pos = [0] * C
    for j, i in enumerate(free_idx):
        pos[i] = j
    limited, z_lo, z_hi = _free_bounds(um, free_idx, limits)
    smooth_w = _smoothness_weights(topo, free_idx, smoothness).to(**kw)
    t_idx, task_value, t_w = _task_targets(um, setup, coordinate_tasks, trials, X.shape[0])

    sp = _ParameterList()
    fit_global = "global_scale" in fit
    if fit_global:
        tgt = scale_target.get("global_scale", None) if isinstance(scale_target, Mapping) else scale_target
        target = float(um.global_scale) * size if tgt is None else float(tgt)
        sp.add("global_scale", target if height is not None else float(um.global_scale), target,  # height: start at its size
               _per_name(scale_weight, ["global_scale"], 1.0, "scale_weight")[0])
    scale_map, n_scale = _scale_parameters(
        sp, um, fit, scale_bodies, symmetric, scale_mode, scale_target, scale_weight, size, fit_global, height
    )
    offset_map, n_offset = _offset_parameters(sp, um, used, fit, offset_weight, offset_axes)
    P = len(sp.names)
    theta0 = torch.tensor(sp.init, **kw).expand(K, P).clone() if P else torch.zeros(K, 0, **kw)

    problem = IKProblem(
        model=um,
        X=X,
        present=present,
        sqrt_w=w.sqrt(),
        q_fixed=um.default_q(),
        coord_free=torch.tensor([not locked for locked in topo.coordinate_locked], device=um.device),
        coord_pos=torch.tensor(pos, dtype=torch.long, device=um.device),
        free_names=tuple(topo.coordinate_names[i] for i in free_idx),
        z_lo=z_lo,
        z_hi=z_hi,
        limit_index=torch.tensor(limited, dtype=torch.long, device=um.device),
        limit_sqrt_w=math.sqrt(limit_weight),
        task_index=torch.tensor(t_idx, dtype=torch.long, device=um.device),
        task_value=task_value,
        task_sqrt_w=torch.tensor(t_w, **kw),
        theta_index=trial_id if not shared else torch.zeros_like(trial_id),
        trial_id=trial_id,
        n_sets=K,
        n_theta=P,
        fit_global=fit_global,
        scale_map=scale_map,
        n_scale=n_scale,
        offset_map=offset_map,
        n_offset=n_offset,
        prior_target=torch.tensor(sp.target, **kw),
        prior_sqrt_w=torch.tensor(sp.weight, **kw).sqrt(),
        smooth_sqrt_w=math.sqrt(smooth_w.max().item()) if smooth_w.numel() else 0.0,
        smooth_rel=smooth_w / smooth_w.max() if smooth_w.numel() and smooth_w.max() > 0 else None,
        theta_names=tuple(sp.names),
        free_index=torch.tensor(free_idx, dtype=torch.long, device=um.device),
        offset_select=_offset_select(offset_map, len(used), n_offset, dtype, um.device),
        plan=kin.plan(free_idx),
        kinematics=kin,
    )
    info = ProblemInfo(
        markers=tuple(used),
        used_marker_index=[topo.marker_index(m) for m in used],
        frames=tuple(tr.n_frames for tr in trials),
        unused=tuple(unused_by_trial),
        missing=tuple(missing_by_trial),
        theta0=theta0,
        free_index=tuple(free_idx),
        model_full=model,
        trials=tuple(trials),
    )
    return problem, info


def _source(tr: MarkerTrial) -> str:
    return tr.source or "trial"


def _used_markers(topo, trials: Sequence[MarkerTrial], setup: IKSetup, marker_weights):
    """The model markers the fit uses (model order): present in some trial with a positive
    weight. Returns them, the weights by name (``None``: all 1), and per trial the trial markers
    not used and the model markers not fitted (each logged)."""
    weights = dict(setup.marker_weights) if setup.marker_weights is not None else None
    if marker_weights is not None:
        base = weights if weights is not None else {m: 1.0 for m in topo.marker_names}
        weights = {**base, **dict(marker_weights)}
    in_any = set().union(*(tr.names for tr in trials))
    used = []
    for m in topo.marker_names:
        w = 1.0 if weights is None else float(weights.get(m, 0.0))
        if w < 0 or not math.isfinite(w):
            raise IKError(f"marker weight for '{m}' is {w}; weights must be finite and >= 0")
        if m in in_any and w > 0:
            used.append(m)
    if not used:
        raise IKError(
            f"no marker of the model is in the trial(s) with a positive weight; model markers: "
            f"{', '.join(topo.marker_names)}; trial markers: {', '.join(sorted(in_any))}"
        )
    if weights is not None:
        unknown = sorted(set(n for n, w in weights.items() if w > 0) - set(topo.marker_names))
        if unknown:
            log.warning("IK setup names marker(s) not in the model, ignored: %s", ", ".join(unknown))
    unused_by_trial, missing_by_trial = [], []
    for tr in trials:
        unused = tuple(n for n in tr.names if n not in used)
        missing = tuple(m for m in topo.marker_names if m not in tr.names or m not in used)
        if unused:
            log.info("%s: %d trial marker(s) not used (not in the model or zero weight): %s",
                     _source(tr), len(unused), ", ".join(unused))
        if missing:
            log.info("%s: %d model marker(s) not fitted (absent from the trial or zero weight): %s",
                     _source(tr), len(missing), ", ".join(missing))
        unused_by_trial.append(unused)
        missing_by_trial.append(missing)
    return used, weights, unused_by_trial, missing_by_trial


def _stack_trials(trials: Sequence[MarkerTrial], used: Sequence[str], dtype, device) -> tuple[Tensor, Tensor, Tensor]:
    """The trials' samples of the ``M`` used markers, frames of all trials stacked: ``X (T, M, 3)``
    (0 in gaps), ``present (T, M)`` (the residual factor: 0 in gaps, sqrt(confidence) else) and
    ``trial_id (T,)``."""
    M = len(used)
    Xs, Cs, tids = [], [], []
    for k, tr in enumerate(trials):
        xyz = tr.xyz.to(device=device, dtype=dtype)
        cols = [tr.names.index(m) if m in tr.names else -1 for m in used]
        have = [j for j, c in enumerate(cols) if c >= 0]
        if len(have) == M:  # the trial has every used marker
            X = xyz.index_select(1, torch.tensor(cols, device=device))
        else:
            X = torch.full((tr.n_frames, M, 3), float("nan"), dtype=dtype, device=device)
            X[:, have] = xyz[:, [cols[j] for j in have]]
        if tr.confidence is not None:  # per-sample weights: scale the residual by sqrt(confidence)
            c = torch.zeros(tr.n_frames, M, dtype=dtype, device=device)
            c[:, have] = tr.confidence.to(device=device, dtype=dtype)[:, [cols[j] for j in have]]
        else:
            c = torch.ones(tr.n_frames, M, dtype=dtype, device=device)
        Cs.append(c)
        Xs.append(X)
        tids.append(torch.full((tr.n_frames,), k, dtype=torch.long, device=device))
    X = torch.cat(Xs, 0) if len(Xs) > 1 else Xs[0]
    present = torch.isfinite(X).all(-1)
    X = torch.where(present[..., None], X, torch.zeros_like(X))
    conf = torch.cat(Cs, 0) if len(Cs) > 1 else Cs[0]
    return X, present.to(dtype) * conf.sqrt(), torch.cat(tids, 0)


def _free_bounds(um: Model, free_idx: Sequence[int], limits: str) -> tuple[list[int], Tensor, Tensor]:
    """Which free coordinates are limited (positions in ``free_idx``) under ``limits`` and the
    bounds ``z_lo``/``z_hi (Cf,)`` of every free coordinate (+-inf where not limited)."""
    topo = um.topology
    lo_all, hi_all = um.coordinate_limits()
    limited = []
    for j, i in enumerate(free_idx):
        r0, r1 = topo.coordinate_ranges[i]
        finite = math.isfinite(r0) or math.isfinite(r1)
        # an angle allowed over a whole turn (OpenSim pelvis: +-pi, clamped) is not limited at all:
        # clamping it would only make a turn through +-180 deg jump
        full_turn = topo.coordinate_motion[i] is Motion.ROTATIONAL and r1 - r0 >= 2 * math.pi - 1e-4
        if finite and not full_turn and (limits == "all" or (limits == "clamped" and topo.coordinate_clamped[i])):
            limited.append(j)
    z_lo = torch.full((len(free_idx),), -math.inf, dtype=lo_all.dtype, device=lo_all.device)
    z_hi = torch.full_like(z_lo, math.inf)
    if limited:
        li = torch.tensor(limited, device=lo_all.device)
        z_lo[li] = lo_all[free_idx][li]
        z_hi[li] = hi_all[free_idx][li]
    return limited, z_lo, z_hi


def _task_targets(um: Model, setup: IKSetup, coordinate_tasks, trials: Sequence[MarkerTrial], T: int):
    """Coordinate tasks (the setup's, updated by ``coordinate_tasks``): full-coordinate indices,
    targets ``(T, Kc)`` (a value, the default, or per frame from the setup's coordinate file)
    and square-root weights. Zero-weight tasks and locked coordinates are left out."""
    topo = um.topology
    C = topo.n_coordinates
    tasks = dict(setup.coordinate_tasks)
    if coordinate_tasks:
        tasks.update(coordinate_tasks)
    full_names = topo.coordinate_names + topo.dependent_names
    q_full_default = None  # made when a task holds a coordinate at its default
    t_idx, t_val, t_w, t_file = [], [], [], []  # t_file: (task position, name) of from_file tasks
    for name, task in tasks.items():
        if name not in full_names:
            raise IKError(f"coordinate task '{name}': no such coordinate; known: {', '.join(full_names)}")
        i = full_names.index(name)
        if task.weight < 0 or not math.isfinite(task.weight):
            raise IKError(f"coordinate task '{name}': weight {task.weight} must be finite and >= 0")
        if task.weight == 0 or (i < C and topo.coordinate_locked[i]):
            continue
        if task.from_file:  # per frame, from the setup's coordinate file (below)
            t_file.append((len(t_idx), name))
        elif task.value is None and q_full_default is None:
            q_full_default = full_coordinates(um, um.default_q())
        t_idx.append(i)
        t_val.append(0.0 if task.from_file else float(q_full_default[i]) if task.value is None else float(task.value))
        t_w.append(math.sqrt(task.weight))
    task_value = torch.tensor(t_val, dtype=um.dtype, device=um.device).expand(T, -1)  # (T, Kc)
    if t_file:
        series = torch.cat([coordinate_targets(setup, [n for _, n in t_file], tr.time, um) for tr in trials], 0)
        task_value = task_value.clone()
        task_value[:, [k for k, _ in t_file]] = series
    return t_idx, task_value, t_w


@dataclasses.dataclass
class _ParameterList:
    """The shared parameters as they are collected: names, start values, prior targets and
    prior weights (one entry each, in the order of ``theta``)."""

    names: list = dataclasses.field(default_factory=list)
    init: list = dataclasses.field(default_factory=list)
    target: list = dataclasses.field(default_factory=list)
    weight: list = dataclasses.field(default_factory=list)

    def add(self, name: str, init: float, target: float, weight: float) -> None:
        self.names.append(name)
        self.init.append(init)
        self.target.append(target)
        self.weight.append(weight)


def _scale_parameters(sp: _ParameterList, um: Model, fit, scale_bodies, symmetric: bool, scale_mode: str,
                      scale_target, scale_weight, size: float, fit_global: bool, height) -> tuple[Tensor, int]:
    """Append the segment-scale parameters to ``sp`` (one per body or left/right pair, times
    three with ``per_axis``). Returns ``scale_map (B * 3,)`` (parameter index within the scale
    block of each body axis, -1 where fixed) and the block's size."""
    topo = um.topology
    B = topo.n_bodies
    scale_map = torch.full((B * 3,), -1, dtype=torch.long, device=um.device)
    if "segment_scales" not in fit:
        return scale_map, 0
    bodies = list(scale_bodies) if scale_bodies is not None else list(topo.body_names)
    for b in bodies:
        if b not in topo.body_names:
            raise IKError(f"scale_bodies: unknown body '{b}'; known: {', '.join(topo.body_names)}")
    groups: dict[str, list[int]] = {}
    for b in bodies:
        groups.setdefault(_side_key(b) if symmetric else b, []).append(topo.body_index(b))
    off = len(sp.names)
    base = um.body_scales
    for gname, members in groups.items():
        comps = [None] if scale_mode == "uniform" else [0, 1, 2]
        for k in comps:
            idx = len(sp.names) - off
            axes = [0, 1, 2] if k is None else [k]
            for b in members:
                for a in axes:
                    scale_map[b * 3 + a] = idx
            v0 = float(base[members][:, axes].mean())
            label = gname.replace("#", "r/l") if symmetric else gname
            tg = scale_target.get(members and topo.body_names[members[0]], None) if isinstance(scale_target, Mapping) \
                else scale_target
            target = v0 * (1.0 if fit_global else size) if tg is None else float(tg)
            sp.add(f"scale:{label}" + ("" if k is None else ":xyz"[k + 1]),
                   target if height is not None else v0,  # height: start at the subject's size
                   target, _per_name(scale_weight, [topo.body_names[members[0]]], 1.0, "scale_weight")[0])
    return scale_map, len(sp.names) - off


def _offset_parameters(sp: _ParameterList, um: Model, used: Sequence[str], fit, offset_weight,
                       offset_axes) -> tuple[Tensor, int]:
    """Append the marker-offset parameters to ``sp`` (each free axis of each used, unfixed
    marker; root markers free in X and Z only unless ``offset_axes`` says otherwise). Returns
    ``offset_map (M * 3,)`` (parameter index within the offset block, -1 where fixed) and the
    block's size."""
    topo = um.topology
    offset_map = torch.full((len(used) * 3,), -1, dtype=torch.long, device=um.device)
    if "marker_offsets" not in fit:
        return offset_map, 0
    off = len(sp.names)
    ow = _per_name(offset_weight, used, 1.0, "offset_weight")
    for j, m in enumerate(used):
        gi = topo.marker_index(m)
        if topo.marker_fixed[gi]:
            continue
        if offset_axes is not None and m in offset_axes:
            mask = tuple(bool(a) for a in offset_axes[m])
            if len(mask) != 3:
                raise IKError(f"offset_axes['{m}']: give 3 booleans (x, y, z), got {offset_axes[m]!r}")
        elif topo.marker_bodies[gi] == 0 and topo.parents[0] == -1 and topo.n_bodies > 1:
            mask = (True, False, True)  # root (pelvis) markers: free in X and Z only (seed paper)
        else:
            mask = (True, True, True)
        for a in range(3):
            if mask[a]:
                offset_map[j * 3 + a] = len(sp.names) - off
                v = float(um.marker_offsets[j, a])
                sp.add(f"offset:{m}:{'xyz'[a]}", v, v, ow[j])
    return offset_map, len(sp.names) - off


def _offset_select(offset_map: Tensor, M: int, n: int, dtype, device) -> Tensor:
    E = torch.zeros(M * 3, max(n, 0), dtype=dtype, device=device)
    if n:
        rows = torch.nonzero(offset_map >= 0).flatten()
        E[rows, offset_map[rows]] = 1.0
    return E.reshape(M, 3, n)


def _initial_z(
    problem: IKProblem, info: ProblemInfo, init: Optional[Tensor], fit: tuple[str, ...], start: str = "segments",
    theta: Optional[Tensor] = None,
) -> Tensor:
    """Starting free poses ``(T, Cf)`` of ``problem``'s frames: ``init``, or the start named by
    ``start`` for the model with shared parameters ``theta (K, P)`` (default their start values)."""
    free_idx = info.free_index
    T = problem.n_frames
    if init is not None:
        q = init.to(dtype=problem.X.dtype, device=problem.X.device)
        if q.shape[-1] != problem.model.topology.n_coordinates:
            raise IKError(
                f"init: last dimension {q.shape[-1]} != number of coordinates {problem.model.topology.n_coordinates}"
            )
        q = q.expand(T, -1)
    elif "pose" in fit:
        th = info.theta0 if theta is None else theta
        model0 = unpack_model(problem, th[0]) if problem.n_theta else problem.model
        kin = problem.kinematics if model0 is problem.model else None
        if start == "segments":
            q = segment_start(model0, problem.X, problem.present, problem.q_fixed, *_full_bounds(problem), problem.sqrt_w,
                              kinematics=kin)
        else:
            q = initial_q(model0, problem.X, problem.present, problem.q_fixed, kinematics=kin)
    else:
        q = problem.q_fixed.expand(T, -1)
    return q[:, list(free_idx)].clone()


def prepare(model: Model, dtype: torch.dtype = torch.float64, device: Any = None) -> ModelKinematics:
    """What :func:`solve` derives from ``model``'s joints (kinematic constants, spline
    coefficients, Jacobian plans, closed-form starts), for many solves with this model:
    ``kin = kf.ik.prepare(model)``, then ``kf.ik.solve(model, trial, kinematics=kin)`` for each
    trial (``dtype``/``device``: those of the solves). The value is explicit and held by the
    caller: after a change of the model (in place or a new model) prepare again; a solve refuses
    kinematics whose model's joints differ from its own."""
    return ModelKinematics(model.to(device=device, dtype=dtype))


def solve(
    model: Model,
    trial: Union[MarkerTrial, Sequence[MarkerTrial]],
    fit: Sequence[str] = ("pose",),
    setup: Optional[IKSetup] = None,
    solver: str = "auto",
    *,
    init: Optional[Tensor] = None,
    start: str = "segments",
    restarts: bool = True,
    shape_frames: int = 500,
    robust: bool = False,
    robust_scale: Optional[float] = None,
    max_iter: Optional[int] = None,
    gn_options: Optional[GNOptions] = None,
    lbfgs_options: Optional[LBFGSOptions] = None,
    kinematics: Optional[ModelKinematics] = None,
    **options: Any,
) -> Union[IKResult, list[IKResult]]:
    """Inverse kinematics over whole trials at once.

    ``model``: a :class:`kinfunc.Model`; ``trial``: a :class:`kinfunc.MarkerTrial` (``xyz (T, M, 3)``
    metres, model frame: Y up, NaN gaps) or a list of them (one subject: they share the fitted
    parameters when ``shared=True``; ``shared=False`` fits each trial its own parameters, all in
    one batched call). Markers are matched by name; unmatched names are logged (logger
    ``kinfunc.ik``) and listed on the result.

    ``fit``: free groups, any of ``"pose"``, ``"global_scale"``, ``"segment_scales"``,
    ``"marker_offsets"``; everything else is frozen. ``setup``: an :class:`IKSetup` (marker
    weights, coordinate tasks, time range). ``solver``: ``"gn"`` (batched Gauss-Newton /
    Levenberg-Marquardt, the default for ``"auto"``) or ``"lbfgs"``.

    Keyword options (see :func:`build_problem`): ``marker_weights`` (name -> weight),
    ``coordinate_tasks`` (name -> :class:`CoordinateTask`), ``limits`` (``"clamped"``: enforce
    ranges of coordinates flagged clamped, the default; ``"all"``; ``"none"``),
    ``limit_weight`` (exterior penalty, 1/rad²), ``smoothness`` (weight of squared second
    differences of q per frame, 1/rad²), ``scale_mode`` (``"uniform"`` or ``"per_axis"``),
    ``scale_bodies``, ``symmetric`` (left/right bodies share scales), ``scale_target`` (float or
    body -> value; default the model's current value), ``scale_weight`` (prior weight),
    ``height`` (the subject's standing height, m: the scale prior's target becomes the model's
    proportions scaled so that its standing height, :func:`kinfunc.ik.model_height`, is
    ``height``: the global scale's target when ``"global_scale"`` is fitted, else every
    scaled body's; the data override it where they see a segment; not with ``scale_target``),
    ``offset_weight`` (prior weight on offsets, 1/m², float or marker -> weight),
    ``offset_axes`` (marker -> 3 booleans; default: root markers free in X and Z only),
    ``shared``, ``dtype`` (default float64), ``device``.

    Robustness options (docs/ik.md, "Any motion: the start, restarts, the robust loss and the
    fit-quality report"):

    * ``start``: ``"segments"`` (default) places the root by a rigid fit and every joint below
      it from its own segment's markers, level by level (:func:`kinfunc.ik.start.segment_start`),
      so the start does not depend on the motion; ``"root"``: the rigid root fit with every
      other coordinate at its default (walking near the default pose only). ``init``: a
      starting ``q (C,)`` or ``(T, C)`` instead (no restarts then).
    * ``restarts`` (default on): frames whose cost ends far above their neighbours' are solved
      again from the nearest good frames (:mod:`kinfunc.ik.repair`); a frame's cost only goes down.
    * ``shape_frames`` (default 500): the shared parameters are fitted on at most this many
      frames spread over the trials (data weights raised so priors keep their balance), then
      every frame's pose with them; 0 = all frames.
    * ``robust``: Cauchy loss on marker distances by iteratively reweighted Gauss-Newton
      (scale ``robust_scale`` m, default 3 x the median marker error, at least 10 mm):
      displaced, swapped or mislabelled markers lose their pull; what was down-weighted,
      where and why is on ``result.quality.issues``. Leave it off for clean data and for
      comparisons with OpenSim (whose loss is plain least squares).

    ``kinematics``: what the solve derives from the model's joints (kinematic constants, spline
    coefficients, plans), prepared once by :func:`kinfunc.ik.prepare` for many solves with one
    model (``prepare(model, dtype=...)`` with this solve's ``dtype``/``device``); without it each
    solve derives them itself (about 2 ms on Gait10dof). They are refused (``ValueError``) when
    the model's joint values differ from those they were prepared from or changed in place
    since.

    Every result carries :class:`~kinfunc.ik.quality.FitQuality` (``result.quality``,
    ``result.frame_flags``, ``result.marker_flags``).

    Returns an :class:`IKResult` (a list of them for a list of trials).
    """
    trials = [trial] if isinstance(trial, MarkerTrial) else list(trial)
    if solver not in ("auto", "gn", "lbfgs"):
        raise IKError(f"solver='{solver}': use 'auto', 'gn' or 'lbfgs'")
    fit = tuple(fit)
    t_start = _time.perf_counter()
    problem, info = build_problem(model, trials, fit, setup, kinematics=kinematics, **options)
    robust_w = None
    if robust and solver == "lbfgs":
        raise IKError("robust=True needs the Gauss-Newton solver (solver='gn' or 'auto')")
    if start not in ("segments", "root"):
        raise IKError(f"start='{start}': use 'segments' (segment-by-segment sweep) or 'root' (rigid root fit only)")
    restarted: tuple[int, ...] = ()
    theta0 = info.theta0 if problem.n_theta else None
    chosen = "gn" if solver == "auto" else solver

    def start_poses(p: IKProblem, theta: Optional[Tensor]) -> Tensor:
        """Starting poses of ``p``'s frames (``p``: this problem, or a subset of its frames
        when ``init`` is None) for shared parameters ``theta``."""
        with torch.inference_mode():  # no gradients flow through the starting point
            z = _initial_z(p, info, init, fit, start, theta)
        return z.clone()  # an ordinary tensor again (L-BFGS records a graph from it)

    # GN with shared parameters fitted on a subsample makes the starts it needs itself
    lazy = chosen == "gn" and "pose" in fit and init is None and problem.n_theta and problem.n_frames > shape_frames > 0
    Z0 = None if lazy else start_poses(problem, None)
    if "pose" not in fit:
        res = _solve_shape_only(problem, Z0, theta0, chosen, max_iter, gn_options, lbfgs_options)
    elif chosen == "gn":
        o = gn_options or GNOptions()
        if max_iter is not None:
            o = dataclasses.replace(o, max_iter=max_iter)
        first = dataclasses.replace(problem, smooth_sqrt_w=0.0) if robust else problem  # see _robust_gn
        res, restarted = _solve_gn_staged(first, Z0, theta0, o, restarts and init is None, shape_frames, start_poses)
        if robust:
            res, robust_w, restarted = _robust_gn(problem, res, theta0, o, restarts and init is None, shape_frames,
                                                  robust_scale, restarted)
    else:
        o = lbfgs_options or LBFGSOptions()
        if max_iter is not None:
            o = dataclasses.replace(o, max_iter=max_iter)
        res = solve_lbfgs(problem, Z0, theta0, o)
    wall = _time.perf_counter() - t_start
    if not res.converged:
        log.warning("IK (%s) stopped after %d iterations without meeting its tolerance", chosen, res.iterations)
    out = _results(problem, info, res, info.trials, fit, chosen, wall, restarted, robust_w)
    return out[0] if isinstance(trial, MarkerTrial) else out


def _positions(problem: IKProblem, res: GNResult) -> Tensor:
    """Marker positions ``(T, M, 3)`` at the result's poses: the solver's own when it kept them,
    else one forward pass per parameter set (each with its own fitted model)."""
    if res.positions is not None:
        return res.positions
    q = expand_q(problem, res.Z)
    with torch.no_grad():
        if res.theta is None or problem.n_sets == 1:
            um = unpack_model(problem, None if res.theta is None else res.theta[0])
            kin = problem.kinematics if um is problem.model else None
            return problem.plan.evaluate(um, problem.plan.constants(um, kin), q, jacobian=False).p
        P = q.new_empty(q.shape[0], problem.model.topology.n_markers, 3)
        for k in range(problem.n_sets):
            idx = torch.nonzero(problem.theta_index == k).flatten()
            um = unpack_model(problem, res.theta[k])
            P[idx] = problem.plan.evaluate(um, problem.plan.constants(um), q.index_select(0, idx), jacobian=False).p
        return P


def robust_weights(err: Tensor, present: Tensor, scale: Optional[float] = None) -> Tensor:
    """Cauchy weights ``1 / (1 + (e / c)^2)`` ``(T, M)`` of marker errors ``err (T, M)`` (m) with
    scale ``c`` (m): ``scale`` if given, else 3 x the median error of the present samples, at
    least 10 mm. Missing samples get weight 0."""
    if scale is None:
        e = err[present > 0]
        scale = max(3.0 * float(e.median()) if e.numel() else 0.0, 0.010)
    w = 1.0 / (1.0 + (err / scale) ** 2)
    return torch.where(present > 0, w, torch.zeros_like(w))


def _robust_gn(problem: IKProblem, res: GNResult, theta0, o: GNOptions, restarts: bool, shape_frames: int,
               scale: Optional[float], restarted: tuple[int, ...], max_rounds: int = 8, smooth_rounds: int = 1):
    """Iteratively reweighted Gauss-Newton with the Cauchy loss (:func:`robust_weights`): every
    round solves the weighted least-squares problem from the last answer, until the weights
    settle. With smoothness the rounds run without it (independent frames, cheap) until the
    weights settle, then at most ``smooth_rounds`` rounds with it. ``res``: the first solve
    (without smoothness). Returns the result, the final weights ``(T, M)`` and the restarted
    frames."""
    w = None
    done = set(restarted)
    total = res.iterations
    phases = [(dataclasses.replace(problem, smooth_sqrt_w=0.0), max_rounds)]
    if problem.smooth_sqrt_w > 0:
        phases.append((problem, smooth_rounds))
    for k, (p, n) in enumerate(phases):
        for r in range(n):
            with torch.no_grad():
                err = torch.linalg.vector_norm(_positions(problem, res) - problem.X, dim=-1)
            w_new = robust_weights(err, problem.present, scale)
            settled = w is not None and float((w_new - w).abs().max()) < 0.02
            if settled and not (k > 0 and r == 0):  # a new phase solves at least once
                break
            w = w_new
            rp = dataclasses.replace(p, present=problem.present * w.sqrt())
            res, rs = _solve_gn_staged(rp, res.Z, res.theta if res.theta is not None else theta0, o, restarts,
                                       shape_frames)
            done |= set(rs)
            total += res.iterations
    return dataclasses.replace(res, iterations=total), w, tuple(sorted(done))


def _solve_gn_staged(
    problem: IKProblem, Z0: Optional[Tensor], theta0: Optional[Tensor], o: GNOptions, restarts: bool,
    shape_frames: int, start_poses=None,
):
    """Gauss-Newton in stages. ``Z0 (T, Cf)``: starting poses, or ``None`` to have
    ``start_poses(problem, theta)`` make them where they are needed.

    Poses first, frames independent (the shared parameters at their start values, no
    smoothness), and frames that end far above their neighbours restarted from them
    (:func:`kinfunc.ik.repair.repair`). Then the shared parameters with the poses; with more
    than ``shape_frames`` frames, on that many frames spread over the trials (their marker
    weights raised by ``T / n`` so that data and priors keep their balance; the first pose
    stage runs on those frames only), after which every frame's pose is solved with the fitted
    parameters (started afresh from them, restarted where independent, then with smoothness
    if asked). Returns the result and the frames that were restarted."""
    restarted: set[int] = set()
    spent = [0]  # iterations of the stages before the last solve

    def gn(p: IKProblem, Z: Tensor, theta: Optional[Tensor]) -> GNResult:
        r = solve_gn(p, Z, theta, o)
        spent[0] += r.iterations
        return r

    single = problem.n_sets == 1 or problem.n_theta == 0
    T = problem.n_frames
    subsample = bool(problem.n_theta) and single and T > shape_frames > 0

    def independent(p: IKProblem, Z: Tensor, frames: Optional[Tensor] = None) -> Tensor:
        """Independent-frame solve of ``p`` (``frames``: which of the problem's frames it holds)
        from ``Z``, with restarts."""
        r = gn(p, Z, None)
        Z = r.Z
        if restarts:
            # the neighbour-step rule chases lower costs that noisy keypoints do not back; with
            # smoothness the banded solve weighs neighbours itself
            fixed, rep = repair(p, Z, o, solved=r, neighbours=problem.smooth_sqrt_w == 0)
            tried = list(rep.restarted)
            restarted.update(frames[tried].tolist() if frames is not None else tried)
            Z = fixed.Z
            if problem.smooth_sqrt_w == 0:  # with smoothness the banded solve bridges such frames itself
                Z = fill_unobserved(p, Z, o, solved=fixed)[0].Z
        return Z

    if subsample:
        idx = torch.linspace(0, T - 1, shape_frames, device=problem.X.device).round().long().unique()
        stage = _frame_subset(_pose_only(problem, theta0, smooth=False), idx)
        Zs = independent(stage, Z0.index_select(0, idx) if Z0 is not None else start_poses(stage, theta0), idx)
        sub = dataclasses.replace(_frame_subset(problem, idx), smooth_sqrt_w=0.0)
        sub = dataclasses.replace(sub, present=sub.present * math.sqrt(T / idx.numel()))
        theta = gn(sub, Zs, theta0).theta
        final = _pose_only(problem, theta, smooth=False)
        Zf = independent(final, Z0 if Z0 is not None else start_poses(final, theta))
        if problem.smooth_sqrt_w > 0:
            res = gn(_pose_only(problem, theta), _continuous(problem, Zf), None)
        else:
            res = gn(final, Zf, None)  # converged already: one evaluation, and the positions
        res = dataclasses.replace(res, theta=theta)
    else:
        if Z0 is None:
            Z0 = start_poses(problem, theta0)
        if problem.coupled and single:
            Z0 = independent(_pose_only(problem, theta0, smooth=False), Z0)
            if problem.smooth_sqrt_w > 0:  # the same poses, written without jumps of whole turns or Euler branches
                Z0 = _continuous(problem, Z0)
        res = gn(problem, Z0, theta0)
        theta = res.theta
        if restarts and single and problem.smooth_sqrt_w == 0:
            final = _pose_only(problem, theta, smooth=False) if problem.n_theta else problem
            fixed, rep = repair(final, res.Z, o, solved=res if not problem.coupled else None)
            restarted |= set(rep.restarted)
            filled, mask = fill_unobserved(final, fixed.Z, o, solved=fixed)
            if rep.improved or bool(mask.any()):
                res = dataclasses.replace(
                    res, Z=filled.Z, positions=filled.positions, objective=filled.objective,
                    history=res.history + [filled.objective],
                )
    if problem.n_theta and single:  # the objective of the whole problem at the returned values
        frames = frame_costs(_pose_only(problem, theta, smooth=False), res.Z)[0].sum()
        total = float(frames + coupling_cost(problem, res.Z, theta))
        res = dataclasses.replace(res, objective=total, history=res.history + [total])
    res = dataclasses.replace(res, iterations=spent[0])  # every stage's iterations (restarts not counted)
    return res, tuple(sorted(restarted))


def _continuous(problem: IKProblem, Z: Tensor) -> Tensor:
    """Free poses ``Z (T, Cf)`` made continuous in time (:func:`kinfunc.ik.start.continuous_in_time`)."""
    q = expand_q(problem, Z)
    return continuous_in_time(problem.model, q, *_full_bounds(problem), problem.trial_id).index_select(1, problem.free_index)


def _full_bounds(problem: IKProblem) -> tuple[Tensor, Tensor]:
    """The bounds the solve enforces, over all coordinates ``(C,)`` each (+-inf where none)."""
    lo = torch.full_like(problem.q_fixed, -math.inf).index_copy(0, problem.free_index, problem.z_lo)
    hi = torch.full_like(problem.q_fixed, math.inf).index_copy(0, problem.free_index, problem.z_hi)
    return lo, hi


def _pose_only(problem: IKProblem, theta0: Optional[Tensor], smooth: bool = True) -> IKProblem:
    """The same problem with the shared parameters frozen at ``theta0[k]`` (per frame set)."""
    model = unpack_model(problem, theta0[0]) if theta0 is not None else problem.model
    return dataclasses.replace(
        problem,
        model=model,
        kinematics=problem.kinematics if model is problem.model else ModelKinematics(model),
        smooth_sqrt_w=problem.smooth_sqrt_w if smooth else 0.0,
        n_theta=0,
        fit_global=False,
        n_scale=0,
        n_offset=0,
        prior_target=problem.prior_target[:0],
        prior_sqrt_w=problem.prior_sqrt_w[:0],
        theta_names=(),
    )


def _solve_shape_only(problem, Z0, theta0, chosen, max_iter, gn_options, lbfgs_options) -> GNResult:
    """Fit only shared parameters with poses fixed at ``Z0`` (L-BFGS over theta)."""
    if problem.n_theta == 0:
        return GNResult(Z0, None, float("nan"), 0, True, [])
    from .problem import objective

    theta = theta0.detach().clone().requires_grad_(True)
    o = lbfgs_options or LBFGSOptions()
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=max_iter or o.max_iter,
        history_size=o.history_size,
        tolerance_grad=o.tolerance_grad,
        tolerance_change=o.tolerance_change,
        line_search_fn="strong_wolfe",
    )
    T = max(problem.n_frames, 1)

    def closure():
        opt.zero_grad()
        f = objective(problem, Z0, theta) / T
        f.backward()
        return f

    opt.step(closure)
    n = int(opt.state[theta].get("n_iter", 0))
    th = theta.detach()
    return GNResult(Z0, th, float(objective(problem, Z0, th)), n, True, [])


def _unobserved_mask(problem: IKProblem, res: GNResult) -> Tensor:
    """``(T, Cf)`` bool: where the present markers did not see each free coordinate at the
    result's poses (:func:`kinfunc.ik.repair.unobserved`), each frame set with its fitted model."""
    with torch.no_grad():
        if res.theta is None or problem.n_theta == 0:
            return unobserved(dataclasses.replace(problem, smooth_sqrt_w=0.0), res.Z)
        out = torch.zeros(res.Z.shape, dtype=torch.bool, device=res.Z.device)
        for k in range(problem.n_sets):
            idx = torch.nonzero(problem.theta_index == k).flatten()
            p = _frame_subset(_pose_only(problem, res.theta[k : k + 1], smooth=False), idx)
            out[idx] = unobserved(p, res.Z.index_select(0, idx))
        return out


def _quality(unobserved_frames, sl: slice, *args, **kwargs) -> FitQuality:
    """:func:`~kinfunc.ik.quality.assess` of one trial (frames ``sl`` of the problem), with the
    coordinates the markers did not see."""
    return assess(*args, unobserved=unobserved_frames()[sl], **kwargs)


def _results(problem: IKProblem, info: ProblemInfo, res: GNResult, trials, fit, solver: str, wall: float,
             restarted: tuple[int, ...] = (), robust_w: Optional[Tensor] = None) -> list[IKResult]:
    """One :class:`IKResult` per trial (marker positions from the solver when it kept them)."""
    full: Model = info.model_full
    used_idx = info.used_marker_index
    out = []
    fitted_models: dict[int, Model] = {}
    start = 0
    unobserved_all: list[Tensor] = []  # made on the first read of a result's quality, for all trials

    def unobserved_frames() -> Tensor:
        if not unobserved_all:
            unobserved_all.append(_unobserved_mask(problem, res))
        return unobserved_all[0]

    with torch.no_grad():
        Q = expand_q(problem, res.Z)
        P = _positions(problem, res)
        for k, tr in enumerate(trials):
            n = tr.n_frames
            sl = slice(start, start + n)
            start += n
            kset = 0 if problem.n_sets == 1 else k
            th = res.theta[kset] if res.theta is not None else None
            um = unpack_model(problem, th)
            if kset not in fitted_models:  # one fitted model object per parameter set
                fitted_models[kset] = full.replace(
                    global_scale=um.global_scale,
                    body_scales=um.body_scales,
                    marker_offsets=full.marker_offsets.index_copy(
                        0, torch.tensor(used_idx, device=full.device), um.marker_offsets
                    ),
                )
            fitted = fitted_models[kset]
            q = Q[sl]
            p = P[sl]
            pres = problem.present[sl] > 0
            d = torch.linalg.vector_norm(p - problem.X[sl], dim=-1)
            err = torch.where(pres, d, torch.full_like(d, float("nan")))
            cnt = pres.sum(-1)
            d2 = torch.where(pres, d * d, torch.zeros_like(d))
            rms = torch.where(cnt > 0, (d2.sum(-1) / cnt.clamp_min(1)).sqrt(), torch.full_like(d[:, 0], float("nan")))
            mx = torch.where(
                cnt > 0, torch.where(pres, d, torch.full_like(d, -1.0)).amax(-1), torch.full_like(d[:, 0], float("nan"))
            )
            cntm = pres.sum(0)
            rms_m = torch.where(cntm > 0, (d2.sum(0) / cntm.clamp_min(1)).sqrt(), torch.full_like(d[0], float("nan")))
            mobj = float((d2 * problem.sqrt_w**2).sum())
            time_k = tr.time.to(dtype=q.dtype, device=q.device)
            quality = functools.partial(
                _quality, unobserved_frames, sl, info.markers, err, rms, problem.X[sl], p, pres, time_k,
                restarted=[f - sl.start for f in restarted if sl.start <= f < sl.stop],
                robust_weight=None if robust_w is None else robust_w[sl],
                coordinate_names=problem.free_names,
            )
            out.append(
                IKResult(
                    q=q,
                    model=fitted,
                    time=time_k,
                    marker_names=info.markers,
                    marker_error=err,
                    marker_rms=rms,
                    marker_max=mx,
                    marker_rms_per_marker=rms_m,
                    coverage=cntm.to(q.dtype) / max(n, 1),
                    iterations=res.iterations,
                    objective=res.objective,
                    marker_objective=mobj,
                    converged=res.converged,
                    wall_time=wall,
                    solver=solver,
                    fit=tuple(fit),
                    unused_trial_markers=info.unused[k],
                    missing_model_markers=info.missing[k],
                    history=tuple(res.history),
                    report=quality,
                )
            )
    return out
