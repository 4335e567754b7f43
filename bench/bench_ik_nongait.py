"""Non-gait IK, kinfunc vs OpenSim 4.6's ``InverseKinematicsTool``, side by side in one run.

Usage::

    python bench/bench_ik_nongait.py [--trials cmu hdm05 synthetic] [--max-frames N] [--repeats 3]
                                     [--synth-frames 240] [--synth-repeats 4]
                                     [--full-body [--full-body-frames N]] [--out bench/results/ik_nongait.json]

Trials (shared data, ``nongait/``): ``cmu`` = ``cmu_85_02.c3d`` (810 frames, CMU 41-marker set,
jumps and a flip), ``hdm05`` = ``hdm05_bd_05-01_01_120.c3d`` (5920 frames). ``--max-frames N``
keeps each trial's first N frames (default: all; the default run takes about 1-4 min on a
2-core machine, hdm05 at full length included: OpenSim's IK runs ~1 ms/frame here).

Per trial:

1. Load (``kf.io.load_c3d``), orient with ``trial.suggest_orientation()``, match the marker names
   to the built-in ``lower_body("cmu")`` model (as ``kinfunc ik`` does) and keep the matched
   markers.
2. Subject-specific model: ``kf.ik.solve(model, trial, fit=("pose", "segment_scales",
   "marker_offsets"))`` -> ``fitted``.
3. The fitted model as an OpenSim model. ``kf.io.save_osim(model, path, template)`` cannot write
   a model without the ``.osim`` it was loaded from (it copies the template and rewrites its
   frames, translation functions and markers), and the built-in model has none. So the *nominal*
   built-in model is first built through the ``opensim`` Python API (bodies, CustomJoints with
   the model's SpatialTransform slot for slot, coordinates with ranges / defaults / clamped flags,
   markers) and printed as the template; ``save_osim(fitted, ..., template)`` then writes the
   fitted model (scales baked as OpenSim's ScaleTool would). Checked before any IK: OpenSim's
   marker positions (``Marker.getLocationInGround``) on the exported file vs ``kf.marker_positions``
   on ``fitted`` at random poses (max difference reported; the run stops above 1e-6 m). If
   ``save_osim`` fails, the fitted model itself is built through the API (``--direct-osim`` forces
   that path).
4. Pose-only IK with ``fitted`` on the same trial, both engines, all marker weights 1, no
   coordinate tasks, whole time range: kinfunc ``kf.ik.solve(fitted, trial, fit=("pose",))``
   (clamped coordinate ranges enforced, its default), timed with torch 1 thread (``--repeats``
   warm solves, median) and 2 threads (``--repeats-2t``); the fit in step 2 is the warm-up;
   OpenSim's IK tool built in code (IKMarkerTask weight 1 per model marker, accuracy 1e-5,
   start/end = the trial's first/last time; it honours clamped coordinate ranges too) on the
   exported model and the trial written by ``kf.io.write_trc``; ``tool.run()`` timed once (its
   own log's frame-loop time is also recorded). The engines are interleaved: half of kinfunc's
   solves, the OpenSim run, the other half, so both see the same state of a shared machine (the
   1-minute load average around them is recorded). OpenSim's IK is single-threaded.
5. Scoring, the same code for both: per-frame marker RMS (over the markers present in that frame)
   of ``kf.marker_positions(fitted, q)`` against the trial, ``q`` = kinfunc's result or OpenSim's
   ``.mot`` read with ``kf.io.read_mot(path, model=fitted).q_for(fitted)``.

``synthetic`` (in the default set; about 100 s of the ~135 s default run on a 2-core machine, 90 s
of it OpenSim's IK at ~50-60 ms/frame on this model: its two knee coupler constraints make it
~5x slower than without them, muscles make no difference): full-body trials with a known answer. The Arnold 2013 subject model
(``arnold2013synthetic/subject01/subject01.osim``: 31 coordinates, two knee coupler constraints, 64
markers), loaded by OpenSim directly and by ``kf.io.load_osim``; ``nongait_suite(model,
n_frames=240, noise=0.0029, seed=0)`` gives squat, sit_to_stand, jump, turn360, lying,
arms_overhead and cartwheel, each with 20 % random gaps (NaN), the right thigh cluster displaced
by 10 cm over the middle third and the lateral knee markers swapped left / right over frames
[0.75 T, 0.85 T). Per trial:

1. ``kf.io.write_trc`` (gaps written as ``NaN``); checked as OpenSim reads it
   (``TimeSeriesTableVec3``: labels, rows, the NaN mask, values) and, after its IK, by its own
   per-frame total squared marker error against ours at its solution over the present markers
   (a gap read as data would differ; OpenSim's ``marker_error_RMS`` divides that total by all the
   markers, missing ones included, so it is not compared directly).
2. Engines, all marker weights 1, no coordinate tasks: OpenSim's IK tool (accuracy 1e-5, run
   once, its model marker locations reported: they are compared with ``kf.marker_positions`` at
   its solution, an FK check); ``kf.ik.solve(model, trial)`` (plain least squares, the same
   objective) and ``kf.ik.solve(model, trial, robust=True)``, each ``--synth-repeats`` times with
   1 torch thread (median; half before, half after the OpenSim run).
3. Scores: per-frame marker RMS against the (corrupted) trial, as above; coordinate errors
   against ``q_true``: RMS over the frames per coordinate (deg, differences wrapped to
   [-pi, pi]) of the rotational coordinates except the pelvis angles, mean over coordinates and
   the worst one, also over the displaced window, the swap window and the other frames; pelvis
   orientation error = the angle between the true and the fitted pelvis rotation matrices
   (``kf.fk(model, q).R[:, 0]``) per frame, mean and max; pelvis translation error; clamped
   limit excursions (kinfunc does not limit a rotational coordinate whose range is a whole turn,
   OpenSim clamps it at +-180 deg). Time ratio = OpenSim ``tool.run()`` wall / kinfunc median.

``--full-body`` (not in the default run; about 5-8 min on a 2-core machine for both takes, most
of it OpenSim's IK at ~35-60 ms/frame): ``kf.models.full_body("cmu")``, all 41 CMU markers, arms
included, on each real trial, side by side with OpenSim as for the lower body:

1. Fit (kinfunc): scales + offsets + poses in one solve on the whole take (2 torch threads):
   mean / p99 / max frame RMS, frames above 40 mm, doubtful frames, wall time (the JSON's
   top-level ``full_body.<take>`` numbers).
2. The fitted model through :func:`build_osim_api` (``save_osim`` needs the model's own .osim
   and cannot write kinfunc's natural-end splines). This model has what the lower body lacks:
   spline knee translations and a shoulder girdle that translates with ``arm_flex`` /
   ``arm_add`` (natural cubic splines of coordinates the shoulder joint rotates by). Written
   faithfully: each natural spline as an exactly equal SimmSpline (two knots added at each end,
   :func:`_natural_as_simm`; knots rewritten at full precision in the printed file, which
   OpenSim prints with 6 digits); each joint owns its own coordinates, the girdle's copies of
   ``arm_flex`` / ``arm_add`` coupled to the shoulder's by a CoordinateCouplerConstraint
   (identity LinearFunction), as OpenSim's gait models couple their knees; the girdle's two
   collinear Y translations split over an extra massless body (``girdle_*_aux``), since OpenSim
   refuses collinear axes in one SpatialTransform. Checked before any IK by
   :func:`check_osim_fk` at 20 random poses with the clamped coordinates over their whole
   ranges, the coupled coordinates set from the independent ones through the constraint's own
   function (OpenSim's ``Model.assemble`` moves the independent ones too, by up to ~3e-7 rad, so
   it is not used); the run stops above 1e-6 m.
3. Pose-only IK with the fitted model on the same markers, both engines, as in 4. above but 1
   torch thread only (``--repeats`` solves, median; half before, half after the OpenSim run):
   kinfunc ``kf.ik.solve(fitted, trial, fit=("pose",))``, OpenSim's IK tool (weights 1, accuracy
   1e-5, whole time range; its coupler constraints enforced). ``--full-body-frames N`` (or
   ``take=N,...``) compares on each take's first N frames only (default: all).
4. Scoring as 5. above; OpenSim's ``.mot`` is converted from degrees by OpenSim's own coordinate
   types (kinfunc's ``full_body`` types ``arm_flex`` / ``arm_add`` as translational: their first
   use is the girdle's translations, so ``read_mot(path, model=fitted)`` would leave them in
   degrees). Reported per take: mean / median / p99 / max frame RMS, frames > 25 / 40 mm, times
   and their ratio, kinfunc - OpenSim per frame (frames worse / better by > 0.5 mm), the worst
   frames (markers whose error grows most, coordinates that differ most), how many worse frames
   have a rotational coordinate > 30 deg from OpenSim's (another branch of a joint: a different
   local minimum), and the same kinfunc solve started at OpenSim's solution (``init=``; untimed):
   frames it leaves worse / makes better than OpenSim by > 0.5 mm.

Prints a table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: shared CPU, no busy-waiting threads

import numpy as np
import torch

import kinfunc as kf
from kinfunc import functions as KF
from kinfunc.fk import effective_scales, translation_scales
from kinfunc.ik.synthetic import NONGAIT_KINDS, nongait_suite
from kinfunc.io._markerio import unit_scale
from kinfunc.markersets import match

DATA = Path(os.environ.get("KINFUNC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "nongait"
TRIALS = {"cmu": "cmu_85_02.c3d", "hdm05": "hdm05_bd_05-01_01_120.c3d"}
SYNTH_MODEL = DATA.parent / "arnold2013synthetic" / "subject01" / "subject01.osim"
SYNTHETIC = "synthetic"
FIT = ("pose", "segment_scales", "marker_offsets")


# ----------------------------------------------------------------------------- helpers
try:  # one copy of the stdout/stderr capture: bench_ik's
    from bench_ik import _run_capturing  # run as a script from bench/
except ImportError:  # imported as bench.bench_ik_nongait
    from .bench_ik import _run_capturing


def _align_by_time(motion, trial, q_os, oso):
    """OpenSim's rows at the trial's frame times (its .mot should hold every frame of the range)."""
    if q_os.shape[0] == trial.n_frames:
        return q_os
    tt = motion.time.double()
    idx = torch.searchsorted(tt, trial.time.double() - 1e-6).clamp(max=len(tt) - 1)
    oso["note"] = f".mot has {q_os.shape[0]} rows for {trial.n_frames} frames; aligned by time"
    return q_os[idx]


def _opensim_loop_s(text):
    """OpenSim's own timing of its frame loop, from its log: ``completed N frames in X millisecond(s)``."""
    hits = re.findall(r"completed (\d+) frames in (\d+) (millisecond|second)", text)
    if not hits:
        return None
    return float(hits[-1][1]) / (1e3 if hits[-1][2] == "millisecond" else 1.0)


def load_trial(path: Path, model, max_frames):
    """Load, orient (suggested), match names to ``model``, keep the matched markers and the first
    ``max_frames`` frames."""
    trial = kf.io.load_c3d(path)
    g = trial.suggest_orientation()
    trial = trial.reoriented(**dict(g))
    m = match(model.marker_names, trial.names)
    trial = trial.renamed({t: mm for mm, t in m.pairs.items() if t != mm})
    used = [n for n in model.marker_names if n in trial.names]
    trial = trial.select(used)
    if max_frames and trial.n_frames > max_frames:
        trial = dataclasses.replace(trial, xyz=trial.xyz[:max_frames], time=trial.time[:max_frames])
    info = {"orientation": dict(g), "orientation_reason": getattr(g, "reason", None), "match": str(m),
            "markers_used": used, "frames": trial.n_frames, "rate_hz": trial.rate,
            "missing_samples_fraction": float(torch.isnan(trial.xyz[..., 0]).double().mean())}
    return trial, info


# --------------------------------------------------------------- kinfunc model -> OpenSim (API)
def _slot_spec(model, b, s):
    """``(coordinate name or None, function spec or None)`` of joint ``b`` slot ``s``; ``None``
    for a structurally idle slot (no group entry: constant 0). The name may be a dependent one."""
    topo = model.topology
    names = topo.coordinate_names + topo.dependent_names
    flat = b * 6 + s
    for g, params in zip(topo.slot_groups, model.slot_params):
        if flat in g.outputs:
            i = g.outputs.index(flat)
            fn = KF.group_entry(g.key, params, i)
            return (None if isinstance(fn, KF.Constant) else names[g.inputs[i]]), fn
    return None, None


def _coupler_spec(model, name):
    """``(independent coordinate name, function spec)`` of kinfunc dependent coordinate ``name``."""
    topo = model.topology
    d = topo.dependent_names.index(name)
    for g, params in zip(topo.coupler_groups, model.coupler_params):
        if d in g.outputs:
            i = g.outputs.index(d)
            return topo.coordinate_names[g.inputs[i]], KF.group_entry(g.key, params, i)
    raise KeyError(name)


def _natural_as_simm(fn):
    """A natural-end ``Spline`` as an exactly equal ``SplineEnd.SIMM`` spline (OpenSim has no
    natural cubic spline: it reads ``NaturalCubicSpline`` as a ``SimmSpline``). Two knots are
    added inside the first and the last interval, on the natural spline's own end pieces: the
    cubic through the four knots nearest each end is then that piece, so the SimmSpline end
    condition (its third derivative equals that cubic's) holds for the natural spline, and the
    SimmSpline through the refined knots is the natural spline itself (one C2 cubic spline
    through given knots with given end conditions). Linear continuation outside the knots
    (same end slopes) in both."""
    x = torch.tensor([fn.x], dtype=torch.float64)
    y = torch.tensor([fn.y], dtype=torch.float64)
    if len(fn.x) == 2:  # a line
        slope = (fn.y[1] - fn.y[0]) / (fn.x[1] - fn.x[0])
        return KF.Linear(slope, fn.y[0] - fn.x[0] * slope)
    b, c, d = KF.spline_coefficients(x, y, KF.SplineEnd.NATURAL)

    def piece(i, u):
        h = u - fn.x[i]
        return fn.y[i] + h * (float(b[0, i]) + h * (float(c[0, i]) + h * float(d[0, i])))

    K = len(fn.x)
    xs, ys = list(fn.x), list(fn.y)
    for i in (K - 2, 0):  # last interval first: inserting there keeps the first interval's indices
        h = fn.x[i + 1] - fn.x[i]
        new = [fn.x[i] + h / 3.0, fn.x[i] + 2.0 * h / 3.0]
        xs[i + 1:i + 1] = new
        ys[i + 1:i + 1] = [piece(i, u) for u in new]
    out = KF.Spline(tuple(xs), tuple(ys), KF.SplineEnd.SIMM)
    # self-check in kinfunc's own evaluation (knots, between them and beyond both ends)
    lo, hi = fn.x[0], fn.x[-1]
    u = torch.linspace(lo - 0.3 * (hi - lo), hi + 0.3 * (hi - lo), 2001, dtype=torch.float64)[:, None]
    a = KF.evaluate(KF.group_key(fn), KF.group_params(KF.group_key(fn), [fn], torch.float64), u)
    e = KF.evaluate(KF.group_key(out), KF.group_params(KF.group_key(out), [out], torch.float64), u)
    err = float((a - e).abs().max())
    if err > 1e-12 * max(1.0, max(abs(v) for v in fn.y)):
        raise RuntimeError(f"natural spline as SimmSpline differs by {err}")
    return out


def _osim_function(osim, fn, scale=1.0, knots=None):
    """An OpenSim ``Function`` equal to spec ``fn`` (times ``scale``: a MultiplierFunction, as
    OpenSim's ScaleTool wraps scaled translation functions). A SimmSpline's knots are appended
    to the list ``knots`` (see :func:`_full_precision_splines`)."""
    if isinstance(fn, KF.Spline) and fn.end is KF.SplineEnd.NATURAL:
        fn = _natural_as_simm(fn)
    if isinstance(fn, KF.Constant):
        f = osim.Constant(fn.value)
    elif isinstance(fn, KF.Linear):
        f = osim.LinearFunction(fn.slope, fn.intercept)
    elif isinstance(fn, KF.Polynomial):
        v = osim.Vector(len(fn.coefficients), 0.0)
        for k, cf in enumerate(fn.coefficients):
            v.set(k, float(cf))
        f = osim.PolynomialFunction(v)
    elif isinstance(fn, KF.Spline):
        f = osim.SimmSpline()
        for xv, yv in zip(fn.x, fn.y):
            f.addPoint(float(xv), float(yv))
        if knots is not None:
            knots.append((fn.x, fn.y))
    else:
        raise NotImplementedError(f"function {fn!r}")
    if scale != 1.0:
        f.thisown = False  # the MultiplierFunction owns (and deletes) its inner function
        f = osim.MultiplierFunction(f, float(scale))
    return f


def _full_precision_splines(path, knots):
    """OpenSim prints a SimmSpline's knots with 6 significant digits (``IO.SetPrecision`` does
    not reach them; ~1e-7 m of marker error here): rewrite each ``<SimmSpline>``'s ``<x>`` /
    ``<y>`` in the printed file with the full-precision knots it was built from (the recorded
    knots nearest to the printed ones; they must agree to 1e-5 relative)."""
    import xml.etree.ElementTree as ET

    tree = ET.parse(path)
    n = 0
    for el in tree.getroot().iter("SimmSpline"):
        x = [float(v) for v in el.find("x").text.split()]
        y = [float(v) for v in el.find("y").text.split()]
        best, err = None, math.inf
        for kx, ky in knots:
            if len(kx) == len(x):
                e = max(max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(x, kx)),
                        max(abs(a - b) / max(1e-3, abs(b)) for a, b in zip(y, ky)))
                if e < err:
                    best, err = (kx, ky), e
        if best is None or err > 1e-5:
            raise RuntimeError(f"{path}: a printed SimmSpline matches none built ({err})")
        el.find("x").text = " ".join(repr(float(v)) for v in best[0])
        el.find("y").text = " ".join(repr(float(v)) for v in best[1])
        n += 1
    if n:
        tree.write(path, encoding="UTF-8", xml_declaration=True)
    return n


def _independent_axes(ax, specs):
    """``ax (6, 3)`` with the axes of idle slots (no coordinate, constant 0: they do not move
    anything) replaced so that each triple (rotations, translations) is orthogonal to the used
    axes: OpenSim refuses a CustomJoint with collinear axes (kinfunc's pin and hinge joints leave
    an idle slot on the canonical axis their own axis uses)."""
    ax = ax.copy()
    for lo in (0, 3):
        idle = [s for s in range(lo, lo + 3) if specs[s][0] is None and (specs[s][1] is None or specs[s][1].value == 0.0)]
        used = [ax[s] / np.linalg.norm(ax[s]) for s in range(lo, lo + 3) if s not in idle]
        for s in idle:
            if not used:
                new = np.eye(3)[s - lo]
            elif len(used) == 1:
                e = np.eye(3)[int(np.argmin(np.abs(used[0])))]
                new = np.cross(used[0], e)
            else:
                new = np.cross(used[0], used[1])
            new = new / np.linalg.norm(new)
            ax[s] = new
            used.append(new)
    return ax


def _coordinate_owners(model, specs):
    """Which joint owns each coordinate that drives a slot (OpenSim: every coordinate belongs to
    exactly one joint). A joint where it drives an identity ``Linear(1, 0)`` slot (a true DOF)
    is preferred, else the first joint using it; other joints that use it get their own
    coordinate coupled to it (see :func:`build_osim_api`)."""
    users = {}
    for b, sp in enumerate(specs):
        for coord, fn in sp:
            if coord is not None:
                users.setdefault(coord, [])
                ident = isinstance(fn, KF.Linear) and fn == KF.Linear(1.0, 0.0)
                users[coord].append((b, ident))
    owner = {}
    for coord, us in users.items():
        idents = [b for b, ident in us if ident]
        owner[coord] = idents[0] if idents else us[0][0]
    return owner


def _split_collinear_translations(ax, used, coords):
    """Partition the used translation slots (3-5) of one joint, ``coords`` their coordinates, into
    ``(main, rest)``, each with linearly independent axes (OpenSim refuses collinear axes in one
    SpatialTransform); ``rest`` empty when all are. Of the valid partitions, the one with the
    fewest (part, coordinate) pairs (each extra pair costs a coupled coordinate), then the
    smallest ``rest``."""
    import itertools

    def independent(slots):
        return not slots or np.linalg.matrix_rank(np.stack([ax[k] for k in slots]), tol=1e-9) == len(slots)

    if independent(used):
        return list(used), []
    best = None
    for r in range(1, len(used)):
        for rest in itertools.combinations(used, r):
            main = [k for k in used if k not in rest]
            if independent(main) and independent(rest):
                cost = (len({coords[k] for k in main}) + len({coords[k] for k in rest}), len(rest))
                if best is None or cost < best[0]:
                    best = (cost, main, list(rest))
    if best is None:
        raise NotImplementedError(f"translation axes {ax[3:].tolist()} cannot be split into two independent sets")
    return best[1], best[2]


def build_osim_api(osim, model, path):
    """Write ``model`` as an .osim built through the OpenSim API: one Body per body (mass 1, no
    geometry), one CustomJoint per joint whose SpatialTransform repeats the model's six slots
    (axes and functions: Constant, LinearFunction, PolynomialFunction, SimmSpline; kinfunc's
    natural-end splines as exactly equal SimmSplines with two extra knots at each end, see
    :func:`_natural_as_simm`; scales baked as OpenSim's ScaleTool would: frame locations and
    marker offsets times the body's scale, translation functions times
    :func:`kinfunc.fk.translation_scales` through a MultiplierFunction), coordinates with the
    model's ranges, defaults, clamped / locked flags, and the markers.

    Coordinates used by several joints (``full_body``'s shoulder girdle translates with
    ``arm_flex`` / ``arm_add``, which the shoulder joint rotates by) and kinfunc's dependent
    coordinates become what OpenSim's gait models do for their knees: each joint owns its own
    coordinates (the owner of a shared one: :func:`_coordinate_owners`; the others name theirs
    ``<coordinate>_in_<joint>``), tied to the independent coordinate by a
    CoordinateCouplerConstraint (identity LinearFunction for a shared coordinate, the coupler's
    function for a dependent one), unclamped, default = the function at the independent's
    default. A joint whose used translation axes are linearly dependent (the girdle's two Y
    translations, one per coordinate) is split in two: ``<joint>_aux`` (parent frame -> massless
    ``<body>_aux``, the surplus translations) then the joint itself (the rest, rotations
    included; translations add, so the product is the same). Returns ``path`` and sets
    ``build_osim_api.last_info`` (couplers, split joints)."""
    topo = model.topology
    with torch.no_grad():
        s_body, s_parent = effective_scales(model)
        s_body, s_parent = s_body.double().cpu().numpy(), s_parent.double().cpu().numpy()
        pl = model.parent_location.detach().double().cpu().numpy() * s_parent
        cl = model.child_location.detach().double().cpu().numpy() * s_body
        po = model.parent_orientation.detach().double().cpu().numpy()
        co = model.child_orientation.detach().double().cpu().numpy()
        axes = model.axes.detach().double().cpu().numpy()
        s_tr = translation_scales(model).detach().double().cpu().numpy()
        off = model.marker_offsets.detach().double().cpu().numpy() * s_body[list(topo.marker_bodies)]
    v3 = lambda a: osim.Vec3(*(float(x) for x in a))  # noqa: E731
    specs = [[_slot_spec(model, b, s) for s in range(6)] for b in range(topo.n_bodies)]
    axes = np.stack([_independent_axes(axes[b], specs[b]) for b in range(topo.n_bodies)])
    owner = _coordinate_owners(model, specs)
    unused = [c for c in topo.coordinate_names if c not in owner]
    if unused:
        raise NotImplementedError(f"coordinates {unused} drive no joint slot (OpenSim has no such coordinate)")
    deps = set(topo.dependent_names)
    couplers = []  # (OpenSim dependent coordinate, independent coordinate, function spec)

    owner_joint = {}  # coordinate -> the OpenSim joint (``b`` or its aux half) that owns it

    def osim_coord(coord, b, ojname):
        """The OpenSim coordinate name OpenSim joint ``ojname`` (joint ``b`` or its aux half) uses
        for ``coord`` (a coupler is recorded)."""
        if owner[coord] == b and owner_joint.setdefault(coord, ojname) == ojname:
            name = coord
        else:
            name = f"{coord}_in_{ojname}"
        if coord in deps:
            ind, fn = _coupler_spec(model, coord)
        elif name != coord:
            ind, fn = coord, KF.Linear(1.0, 0.0)
        else:
            return name
        if not any(c[0] == name for c in couplers):
            couplers.append((name, ind, fn))
        return name

    om = osim.Model()
    om.setName(topo.name)
    bodies = {}
    for b, name in enumerate(topo.body_names):
        body = osim.Body(name, 1.0, osim.Vec3(0), osim.Inertia(0.01, 0.01, 0.01))
        om.addBody(body)
        bodies[name] = body
    split, knots = [], []

    def transform(b, slots, ojname):
        """A SpatialTransform of joint ``b`` with only ``slots`` active (the others idle, their
        axes made independent of the active ones)."""
        sp = [specs[b][s] if s in slots else (None, None) for s in range(6)]
        ax = _independent_axes(axes[b], sp)
        st = osim.SpatialTransform()
        for s in range(6):
            ta = st.updTransformAxis(s)
            coord, fn = sp[s]
            names = osim.ArrayStr()
            if coord is not None:
                names.append(osim_coord(coord, b, ojname))
            ta.setCoordinateNames(names)
            ta.setAxis(v3(ax[s]))
            ta.set_function(_osim_function(osim, fn or KF.Constant(0.0), s_tr[b, s - 3] if s >= 3 else 1.0, knots))
        return st

    for b, jname in enumerate(topo.joint_names):
        parent = om.getGround() if topo.parents[b] < 0 else bodies[topo.body_names[topo.parents[b]]]
        child = bodies[topo.body_names[b]]
        used_tr = [s for s in range(3, 6) if specs[b][s][1] is not None]
        _, rest = _split_collinear_translations(axes[b], used_tr, {k: specs[b][k][0] for k in used_tr})
        if rest:
            aux = osim.Body(f"{topo.body_names[b]}_aux", 1e-6, osim.Vec3(0), osim.Inertia(1e-9, 1e-9, 1e-9))
            om.addBody(aux)
            om.addJoint(osim.CustomJoint(f"{jname}_aux", parent, v3(pl[b]), v3(po[b]), aux, osim.Vec3(0), osim.Vec3(0),
                                         transform(b, rest, f"{jname}_aux")))
            om.addJoint(osim.CustomJoint(jname, aux, osim.Vec3(0), osim.Vec3(0), child, v3(cl[b]), v3(co[b]),
                                         transform(b, [s for s in range(6) if s not in rest], jname)))
            split.append(jname)
        else:
            om.addJoint(osim.CustomJoint(jname, parent, v3(pl[b]), v3(po[b]), child, v3(cl[b]), v3(co[b]),
                                         transform(b, range(6), jname)))
    cs = om.updCoordinateSet()
    for i, c in enumerate(topo.coordinate_names):
        coord = cs.get(c)
        lo, hi = topo.coordinate_ranges[i]
        coord.setRangeMin(float(lo))
        coord.setRangeMax(float(hi))
        coord.setDefaultValue(float(topo.coordinate_defaults[i]))
        coord.setDefaultClamped(bool(topo.coordinate_clamped[i]))
        coord.setDefaultLocked(bool(topo.coordinate_locked[i]))
    for dep, ind, fn in couplers:
        key = KF.group_key(fn)
        q0 = torch.tensor([[topo.coordinate_defaults[topo.coordinate_index(ind)]]], dtype=torch.float64)
        coord = cs.get(dep)
        coord.setRangeMin(-1e3)
        coord.setRangeMax(1e3)
        coord.setDefaultValue(float(KF.evaluate(key, KF.group_params(key, [fn], torch.float64), q0)))
        coord.setDefaultClamped(False)
        coord.setDefaultLocked(False)
        cc = osim.CoordinateCouplerConstraint()
        cc.setName(f"{dep}_coupler")
        names = osim.ArrayStr()
        names.append(ind)
        cc.setIndependentCoordinateNames(names)
        cc.setDependentCoordinateName(dep)
        cc.setFunction(_osim_function(osim, fn, knots=knots))
        om.addConstraint(cc)
    for i, name in enumerate(topo.marker_names):
        mk = osim.Marker(name, bodies[topo.body_names[topo.marker_bodies[i]]], v3(off[i]))
        mk.set_fixed(bool(topo.marker_fixed[i]))
        om.addMarker(mk)
    om.finalizeConnections()
    om.printToXML(str(path))
    n_spl = _full_precision_splines(path, knots)
    build_osim_api.last_info = {"couplers": [f"{d} = f({i})" for d, i, _ in couplers], "split_joints": split,
                                "simm_splines": n_spl}
    return path


def check_osim_fk(osim, path, model, n_poses=20, seed=0, whole_ranges=False):
    """Max |OpenSim marker position - kf.marker_positions| (m) over ``n_poses`` random poses
    (coordinates within their ranges and within +-1.4 rad / m, pelvis_ty raised by 0.95 m; with
    ``whole_ranges`` clamped coordinates over their whole range). OpenSim's coupled (dependent)
    coordinates are set from their independent ones through the constraint's own function (as
    its assembly would; the constraint errors after that are checked to be ~0) before
    ``realizePosition``."""
    om = osim.Model(str(path))
    s = om.initSystem()
    topo = model.topology
    g = torch.Generator().manual_seed(seed)
    lo0 = torch.tensor([r[0] for r in topo.coordinate_ranges], dtype=torch.float64)
    hi0 = torch.tensor([r[1] for r in topo.coordinate_ranges], dtype=torch.float64)
    lo = torch.maximum(lo0, torch.tensor(-1.4)).clone()
    hi = torch.minimum(hi0, torch.tensor(1.4)).clone()
    if whole_ranges:
        cl = torch.tensor(topo.coordinate_clamped) & torch.isfinite(lo0) & torch.isfinite(hi0)
        lo[cl], hi[cl] = lo0[cl], hi0[cl]
    q = lo + (hi - lo) * torch.rand(n_poses, topo.n_coordinates, generator=g, dtype=torch.float64)
    q[:, topo.coordinate_index("pelvis_ty")] += 0.95
    ref = kf.marker_positions(model, q.to(model.dtype)).double().numpy()
    cs = om.getCoordinateSet()
    ms = om.getMarkerSet()
    worst = 0.0
    names_os = [cs.get(i).getName() for i in range(cs.getSize())]
    missing = [c for c in topo.coordinate_names if c not in names_os]
    if missing:
        raise RuntimeError(f"{path}: OpenSim model lacks coordinates {missing}")
    couplers = []
    con = om.getConstraintSet()
    for i in range(con.getSize()):
        cc = osim.CoordinateCouplerConstraint.safeDownCast(con.get(i))
        if cc is not None:
            couplers.append((cc.getDependentCoordinateName(), cc.getIndependentCoordinateNames().get(0), cc.getFunction()))
    qerr = 0.0
    for k in range(n_poses):
        for i, c in enumerate(topo.coordinate_names):
            cs.get(c).setValue(s, float(q[k, i]), False)
        for dep, ind, fn in couplers:
            x = osim.Vector(1, cs.get(ind).getValue(s))
            cs.get(dep).setValue(s, fn.calcValue(x), False)
        om.realizePosition(s)
        if couplers:
            qerr = max(qerr, float(np.abs(np.array([s.getQErr().get(j) for j in range(s.getNQErr())])).max(initial=0.0)))
        for mi, name in enumerate(topo.marker_names):
            p = ms.get(name).getLocationInGround(s)
            d = max(abs(p.get(a) - ref[k, mi, a]) for a in range(3))
            worst = max(worst, d)
    check_osim_fk.last_constraint_error = qerr
    if qerr > 1e-9:
        raise RuntimeError(f"{path}: coupler constraint errors {qerr} after setting dependent coordinates")
    return worst


# ------------------------------------------------------------------------------ OpenSim IK
def run_opensim_ik(osim, osim_path, trc_path, marker_names, t0, t1, folder, report_locations=False):
    """OpenSim's IK tool, built in code: one IKMarkerTask of weight 1 per marker, no coordinate
    tasks, accuracy 1e-5, ``[t0, t1]``. Returns ``(tool.run() wall s, its logged frame-loop s,
    .mot path, marker-errors .sto path or None, captured log)``; with ``report_locations`` it
    also writes the model's marker locations per frame (``*_ik_model_marker_locations.sto``)."""
    tool = osim.InverseKinematicsTool()
    # keep a reference: the tool does not own it; loading logged (missing geometry files) and captured
    om, load_log = _run_capturing(lambda: osim.Model(str(osim_path)))
    tool.setModel(om)
    tool.setName("nongait")
    tool.setMarkerDataFileName(str(trc_path))
    tasks = tool.getIKTaskSet()
    for n in marker_names:
        t = osim.IKMarkerTask()
        t.setName(n)
        t.setApply(True)
        t.setWeight(1.0)
        tasks.cloneAndAppend(t)
    tool.set_accuracy(1e-5)
    tool.setStartTime(float(t0))
    tool.setEndTime(float(t1))
    tool.set_results_directory(str(folder))
    mot = Path(folder) / "opensim_ik.mot"
    tool.setOutputMotionFileName(str(mot))
    if report_locations:
        tool.set_report_marker_locations(True)
    t_start = time.perf_counter()
    ok, log = _run_capturing(tool.run)
    wall = time.perf_counter() - t_start
    if not ok:
        raise RuntimeError("OpenSim IK failed:\n" + log[-3000:])
    errs = sorted(Path(folder).glob("*marker_errors.sto"))
    return wall, _opensim_loop_s(log), mot, (errs[0] if errs else None), load_log + log


# --------------------------------------------------------------------------------- scoring
def _per_frame_diff(rms_kf, rms_os, time):
    """kinfunc - OpenSim per-frame RMS (mm): summary dict, and the frames kinfunc is worse by
    more than 0.5 mm."""
    diff = (rms_kf - rms_os) * 1e3
    ok = ~torch.isnan(diff)
    d = diff[ok]
    worse = torch.nonzero(ok & (diff > 0.5)).flatten()
    better = torch.nonzero(ok & (diff < -0.5)).flatten()
    return {
        "mean_mm": float(d.mean()), "max_mm": float(d.max()), "min_mm": float(d.min()),
        "frames_kinfunc_worse_gt_0.5mm": int(worse.numel()),
        "frames_kinfunc_better_gt_0.5mm": int(better.numel()),
        "worse_frames_first_50": worse[:50].tolist(),
        "worse_frames_time_s_first_50": [round(float(time[i]), 4) for i in worse[:50]],
    }, worse


def per_frame_rms(model, q, trial):
    """Per-frame marker RMS (m) over the markers present in the frame; NaN if none is."""
    with torch.no_grad():
        p = kf.marker_positions(model, q.to(model.dtype)).double()  # (T, M, 3)
    idx = [model.marker_names.index(n) for n in trial.names]
    x = trial.xyz.double()
    d2 = (p[:, idx] - x).square().sum(-1)  # (T, M), NaN where missing
    present = ~torch.isnan(d2)
    n = present.sum(-1)
    rms = torch.sqrt(torch.where(present, d2, torch.zeros_like(d2)).sum(-1) / n.clamp(min=1))
    return torch.where(n > 0, rms, torch.full_like(rms, math.nan))


def stats_mm(rms):
    r = rms[~torch.isnan(rms)] * 1e3
    return {
        "frames_scored": int(r.numel()),
        "mean_mm": float(r.mean()),
        "median_mm": float(r.median()),
        "p99_mm": float(torch.quantile(r, 0.99)),
        "max_mm": float(r.max()),
        "frames_gt_25mm": int((r > 25).sum()),
        "frames_gt_40mm": int((r > 40).sum()),
    }


def limit_violations(model, q, skip_full_turn=False):
    """Largest excursion of ``q`` beyond a clamped coordinate's range; ``skip_full_turn``: rotational
    coordinates whose range spans a whole turn (OpenSim pelvis angles, +-180 deg clamped) are not
    counted (kinfunc does not treat such a range as a limit; see :func:`kf.ik.solve`)."""
    topo = model.topology
    lo, hi = model.coordinate_limits()
    cl = torch.tensor(topo.coordinate_clamped)
    if skip_full_turn:
        full = torch.tensor([getattr(m, "value", m) == "rotational" and r1 - r0 >= 2 * math.pi - 1e-4
                             for m, (r0, r1) in zip(topo.coordinate_motion, topo.coordinate_ranges)])
        cl = cl & ~full
    q = q.double()
    over = torch.clamp(q - hi.double(), min=0) + torch.clamp(lo.double() - q, min=0)
    over = over[:, cl]
    return float(over.max()) if over.numel() else 0.0


# ------------------------------------------------------------------------------------ main
def bench_trial(key, args, osim, workdir):
    model = kf.models.lower_body("cmu", dtype=torch.float64)
    trial, info = load_trial(DATA / TRIALS[key], model, args.max_frames.get(key))
    out = {"file": TRIALS[key], **info}
    print(f"[{key}] {trial.n_frames} frames x {trial.n_markers} markers, orientation {dict(info['orientation'])}", flush=True)

    # 1. subject-specific model
    torch.set_num_threads(args.fit_threads)
    t0 = time.perf_counter()
    fit_res = kf.ik.solve(model, trial, fit=FIT)
    out["fit"] = {"wall_s": time.perf_counter() - t0, "torch_threads": args.fit_threads, "summary": fit_res.summary(),
                  "mean_rms_mm": 1e3 * float(fit_res.marker_rms.nanmean()),
                  "body_scales": {b: fit_res.model.body_scales[i].tolist() for i, b in enumerate(model.body_names)}}
    fitted = fit_res.model
    print(f"[{key}] fit: {fit_res.summary()}", flush=True)

    # 2. the fitted model as .osim + FK check
    folder = Path(workdir) / key
    folder.mkdir(parents=True, exist_ok=True)
    exp = {"save_osim_needs_template": True}
    export = folder / "fitted.osim"
    template = folder / "template_nominal_api.osim"
    build_osim_api(osim, model, template)
    exp["template_check_max_m"] = check_osim_fk(osim, template, model)
    used = None
    if not args.direct_osim:
        try:
            kf.io.save_osim(fitted, export, template)
            exp["save_osim_check_max_m"] = check_osim_fk(osim, export, fitted)
            exp["load_osim_roundtrip_max_m"] = float(
                (kf.marker_positions(kf.io.load_osim(export), fitted.default_q()) - kf.marker_positions(fitted, fitted.default_q())).abs().max())
            if exp["save_osim_check_max_m"] < 1e-6:
                used = "save_osim(fitted, template=API-built nominal model)"
        except Exception as e:  # noqa: BLE001 - reported, then the direct build is used
            exp["save_osim_error"] = f"{type(e).__name__}: {e}"
    if used is None:
        export = folder / "fitted_api.osim"
        build_osim_api(osim, fitted, export)
        exp["direct_api_check_max_m"] = check_osim_fk(osim, export, fitted)
        used = "fitted model built directly through the OpenSim API"
    exp["used"] = used
    exp["check_max_m"] = exp.get("save_osim_check_max_m") if "save_osim" in used else exp["direct_api_check_max_m"]
    out["osim_export"] = exp
    print(f"[{key}] .osim export: {used}; OpenSim vs kinfunc marker positions at 20 random poses: "
          f"max {exp['check_max_m']:.2e} m (template {exp['template_check_max_m']:.2e} m)", flush=True)
    if exp["check_max_m"] > 1e-6:
        raise RuntimeError(f"exported model disagrees with kinfunc FK by {exp['check_max_m']} m: comparison meaningless")

    # 3./4. pose-only IK, both engines. Timings interleaved (kinfunc 1 and 2 threads, OpenSim,
    # kinfunc 1 and 2 threads again) so that both see the same state of a shared machine.
    trc = folder / "trial.trc"
    kf.io.write_trc(trc, trial)
    kfo = {"threads": {"1": {"all_s": []}, "2": {"all_s": []}}}
    res = None

    def kf_round():
        nonlocal res
        for nt, n in ((1, args.repeats), (2, args.repeats_2t)):
            torch.set_num_threads(nt)
            for _ in range(max(1, (n + 1) // 2)):
                t0 = time.perf_counter()
                r = kf.ik.solve(fitted, trial, fit=("pose",))
                kfo["threads"][str(nt)]["all_s"].append(time.perf_counter() - t0)
                if nt == 1:
                    res = r
        torch.set_num_threads(1)

    load = [os.getloadavg()[0]]
    kf_round()
    load.append(os.getloadavg()[0])
    wall, loop, mot, sto, log = run_opensim_ik(osim, export, trc, trial.names, float(trial.time[0]), float(trial.time[-1]), folder)
    load.append(os.getloadavg()[0])
    kf_round()
    load.append(os.getloadavg()[0])
    for v in kfo["threads"].values():
        v["median_s"] = statistics.median(v["all_s"])
        v["min_s"] = min(v["all_s"])
    kfo["iterations"] = res.iterations
    kfo["converged"] = bool(res.converged) if not isinstance(res.converged, torch.Tensor) else bool(res.converged.all())
    kfo["summary"] = res.summary()
    q_kf = res.q.double()
    kfo["max_clamped_limit_violation"] = limit_violations(fitted, q_kf)
    out["load_avg_1min_around_timings"] = load
    motion = kf.io.read_mot(mot, model=fitted)
    q_os = motion.q_for(fitted).double()
    oso = {"run_s": wall, "frame_loop_s_from_log": loop, "frames_in_mot": int(q_os.shape[0]),
           "max_clamped_limit_violation": limit_violations(fitted, q_os)}
    if sto is not None:
        e = kf.io.read_sto(sto) if hasattr(kf.io, "read_sto") else kf.io.read_mot(sto)
        if "marker_error_RMS" in e.names:
            oso["own_reported_mean_rms_mm"] = 1e3 * float(e.values[:, e.names.index("marker_error_RMS")].double().mean())
    q_os = _align_by_time(motion, trial, q_os, oso)

    # 5. scoring
    rms_kf = per_frame_rms(fitted, q_kf, trial)
    rms_os = per_frame_rms(fitted, q_os, trial)
    kfo.update(stats_mm(rms_kf))
    kfo["own_reported_mean_rms_mm"] = 1e3 * float(res.marker_rms.nanmean())
    oso.update(stats_mm(rms_os))
    out["kinfunc"] = kfo
    out["opensim"] = oso
    out["diff_kinfunc_minus_opensim"], worse = _per_frame_diff(rms_kf, rms_os, trial.time)
    out["time_ratio_opensim_run_over_kinfunc"] = {nt: wall / v["median_s"] for nt, v in kfo["threads"].items()}
    if loop:
        out["time_ratio_opensim_frame_loop_over_kinfunc"] = {nt: loop / v["median_s"] for nt, v in kfo["threads"].items()}
    out["per_frame_rms_mm"] = {"kinfunc": [round(float(x) * 1e3, 3) for x in rms_kf],
                               "opensim": [round(float(x) * 1e3, 3) for x in rms_os]}
    return out


# ------------------------------------------------------------------- synthetic full-body trials
def check_trc_gaps(osim, trc, trial):
    """How OpenSim reads the TRC that ``kf.io.write_trc`` wrote (gaps as ``NaN``): its
    ``TimeSeriesTableVec3`` (the reader the IK tool's ``MarkersReference`` uses) against the
    trial: labels, rows, NaN mask, values where present."""
    tab = osim.TimeSeriesTableVec3(str(trc))
    labels = list(tab.getColumnLabels())
    flat = tab.flatten()  # keep the table alive while its matrix is copied (a temporary segfaults)
    mat = flat.getMatrix()
    a = np.array(mat.to_numpy(), copy=True)
    T, M = trial.n_frames, trial.n_markers
    units = tab.getTableMetaDataAsString("Units") if tab.hasTableMetaDataKey("Units") else None
    out = {"labels_match": labels == list(trial.names), "rows": int(tab.getNumRows()), "units_in_file": units}
    if out["labels_match"] and a.shape == (T, 3 * M):
        a = a.reshape(T, M, 3) * (unit_scale(units) if units else 1.0)
        x = trial.xyz.double().cpu().numpy()
        nan_os, nan_tr = np.isnan(a), np.isnan(x)
        both = ~nan_os & ~nan_tr
        out.update({
            "missing_samples_trial": int(nan_tr[..., 0].sum()),
            "missing_samples_opensim": int(nan_os.any(-1).sum()),
            "partially_missing_opensim": int((nan_os.any(-1) & ~nan_os.all(-1)).sum()),
            "nan_mask_equal": bool((nan_os == nan_tr).all()),
            "max_abs_diff_present_m": float(np.abs(a[both] - x[both]).max()) if both.any() else None,
        })
    out["ok"] = bool(out["labels_match"] and out.get("nan_mask_equal") and out["rows"] == T
                     and (out.get("max_abs_diff_present_m") or 0.0) < 1e-8)
    return out


def _wrap(d):
    """Angle differences wrapped to [-pi, pi]."""
    return torch.remainder(d + math.pi, 2 * math.pi) - math.pi


def coordinate_errors(model, q, q_true, windows=None):
    """Errors of ``q (T, C)`` against ``q_true``: per-coordinate RMS over the frames (deg; angle
    differences wrapped to [-pi, pi]) of the rotational coordinates except the pelvis angles
    (mean and worst coordinate), the pelvis orientation error per frame (the angle of the
    rotation between the true and the fitted pelvis rotation matrices, ``kf.fk(model, q).R[:, 0]``;
    deg) and the pelvis translation error per frame (mm). ``windows``: name -> frame indices;
    the mean coordinate RMS over those frames only is reported too."""
    topo = model.topology
    names = topo.coordinate_names
    q, q_true = q.double(), q_true.double()
    rot = [getattr(m, "value", m) == "rotational" for m in topo.coordinate_motion]
    joint = [i for i, n in enumerate(names) if rot[i] and not n.startswith("pelvis_")]
    trans = [i for i, n in enumerate(names) if not rot[i] and n.startswith("pelvis_")]
    d = q - q_true
    dj = _wrap(d[:, joint])
    per = torch.sqrt(torch.nanmean(dj.square(), 0)) * (180 / math.pi)
    w = int(torch.argmax(torch.nan_to_num(per, nan=math.inf)))
    with torch.no_grad():
        R = kf.fk(model, q.to(model.dtype)).R[:, 0].double()
        Rt = kf.fk(model, q_true.to(model.dtype)).R[:, 0].double()
    # ||R - Rt||_F = 2 sqrt(2) sin(theta / 2): accurate for small angles too
    ang = 2 * torch.asin((torch.linalg.matrix_norm(R - Rt) / (2 * math.sqrt(2))).clamp(max=1.0)) * (180 / math.pi)
    tr = d[:, trans].norm(dim=-1) * 1e3
    out = {
        "coords_scored": [names[i] for i in joint],
        "mean_coord_rms_deg": float(per.mean()),
        "worst_coord": names[joint[w]],
        "worst_coord_rms_deg": float(per[w]),
        "per_coord_rms_deg": {names[i]: round(float(per[k]), 4) for k, i in enumerate(joint)},
        "pelvis_orientation_mean_deg": float(ang.nanmean()),
        "pelvis_orientation_max_deg": float(ang.nan_to_num(nan=math.inf).max()),
        "pelvis_orientation_frames_gt_10deg": int((ang.nan_to_num(nan=math.inf) > 10).sum()),
        "pelvis_translation_mean_mm": float(tr.nanmean()),
        "pelvis_translation_max_mm": float(tr.nan_to_num(nan=math.inf).max()),
        "frames_with_nan_q": int(torch.isnan(q).any(-1).sum()),
    }
    for key, idx in (windows or {}).items():
        if len(idx):
            p = torch.sqrt(torch.nanmean(dj[idx].square(), 0)) * (180 / math.pi)
            out[f"mean_coord_rms_deg_{key}"] = float(p.mean())
    return out


def _log_oddities(log):
    """Lines of OpenSim's log that warn or report a failure, except missing geometry files and
    the per-frame error lines."""
    bad = []
    for ln in log.splitlines():
        low = ln.lower()
        if "couldn't find file" in low or re.match(r"\[info\] frame \d+ ", low):
            continue
        if any(k in low for k in ("warn", "error", "fail", "exception", "not converge", "could not")):
            bad.append(ln.strip())
    return bad


class _Collect(logging.Handler):
    """Collects what kinfunc logs (``warnings`` too) while active, instead of printing it."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self._log = logging.getLogger("kinfunc")
        self._log.addHandler(self)
        self._warn = warnings.catch_warnings(record=True)
        self._caught = self._warn.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._warn.__exit__(*exc)
        self.messages += [str(w.message) for w in self._caught]
        self._log.removeHandler(self)
        return False


def bench_synthetic(args, osim, workdir):
    """Synthetic full-body non-gait trials (:func:`kinfunc.ik.synthetic.nongait_suite`) of the
    Arnold 2013 subject model: OpenSim's IK tool vs ``kf.ik.solve`` plain and robust."""
    model = kf.io.load_osim(SYNTH_MODEL, dtype=torch.float64)
    suite = nongait_suite(model, n_frames=args.synth_frames, noise=args.synth_noise, seed=args.synth_seed,
                          kinds=args.synth_kinds)
    topo = model.topology
    out = {"model": str(SYNTH_MODEL), "frames": args.synth_frames, "noise_m": args.synth_noise, "seed": args.synth_seed,
           "markers": topo.n_markers, "coordinates": topo.n_coordinates, "dependent_coordinates": list(topo.dependent_names),
           "pelvis_body": topo.body_names[0], "repeats": args.synth_repeats, "torch_threads": 1, "kinds": {}}
    print(f"[{SYNTHETIC}] {SYNTH_MODEL.name}: {topo.n_coordinates} coordinates, {topo.n_markers} markers; "
          f"{len(suite)} kinds x {args.synth_frames} frames, noise {args.synth_noise * 1e3:.1f} mm", flush=True)
    engines = {"kinfunc": {}, "kinfunc_robust": {"robust": True},
               "kinfunc_robust_smooth": {"robust": True, "smoothness": 1.0}}
    torch.set_num_threads(1)
    with _Collect():
        for kw in engines.values():  # warm-up (code paths, allocations)
            kf.ik.solve(model, suite[0][2], **kw)
    for kind, q_true, trial, truth in suite:
        folder = Path(workdir) / SYNTHETIC / kind
        folder.mkdir(parents=True, exist_ok=True)
        trc = kf.io.write_trc(folder / f"{kind}.trc", trial)
        r = {"missing_samples_fraction": float(torch.isnan(trial.xyz[..., 0]).double().mean()),
             "displaced": {"markers": list(truth["displaced"]["markers"]),
                           "offset_m": [float(v) for v in truth["displaced"]["offset"]],
                           "frames": [int(truth["displaced"]["frames"][0]), int(truth["displaced"]["frames"][-1])]},
             "swap": {"markers": list(truth["swap"]["markers"]),
                      "frames": [int(truth["swap"]["frames"][0]), int(truth["swap"]["frames"][-1])]},
             "trc_read_by_opensim": check_trc_gaps(osim, trc, trial)}
        times = {k: [] for k in engines}
        res = {}

        warned = {k: [] for k in engines}

        def kf_round(n):
            for name, kw in engines.items():
                for _ in range(n):
                    with _Collect() as caught:
                        t0 = time.perf_counter()
                        res[name] = kf.ik.solve(model, trial, **kw)
                        times[name].append(time.perf_counter() - t0)
                    warned[name] = sorted(set(caught.messages))

        torch.set_num_threads(1)
        load = [os.getloadavg()[0]]
        kf_round(max(1, (args.synth_repeats + 1) // 2))
        load.append(os.getloadavg()[0])
        wall, loop, mot, sto, log = run_opensim_ik(osim, SYNTH_MODEL, trc, trial.names, float(trial.time[0]),
                                                   float(trial.time[-1]), folder, report_locations=True)
        load.append(os.getloadavg()[0])
        kf_round(max(1, args.synth_repeats // 2))
        load.append(os.getloadavg()[0])
        r["load_avg_1min_around_timings"] = load

        motion = kf.io.read_mot(mot, model=model)
        q_os = motion.q_for(model).double()
        oso = {"run_s": wall, "frame_loop_s_from_log": loop, "frames_in_mot": int(q_os.shape[0]),
               "log_oddities": _log_oddities(log)[:20]}
        q_os = _align_by_time(motion, trial, q_os, oso)
        rms_os = per_frame_rms(model, q_os, trial)
        # OpenSim's own per-frame total squared marker error vs ours at its q, summed over the
        # markers present (a gap read as data, e.g. a marker at the origin, would differ). Its
        # own "marker_error_RMS" divides that total by all the markers, missing ones included.
        if sto is not None:
            e = kf.io.read_sto(sto) if hasattr(kf.io, "read_sto") else kf.io.read_mot(sto)
            if "total_squared_error" in e.names and e.values.shape[0] == q_os.shape[0] == trial.n_frames:
                with torch.no_grad():
                    d2 = (kf.marker_positions(model, q_os.to(model.dtype)).double()
                          [:, [model.marker_names.index(n) for n in trial.names]] - trial.xyz.double()).square().sum(-1)
                ours = torch.nansum(d2, -1)
                n_present = (~torch.isnan(d2)).sum(-1)
                tot = e.values[:, e.names.index("total_squared_error")].double()
                oso["own_total_sq_error_vs_ours_max_abs_diff_m2"] = float((tot - ours).abs().max())
                oso["own_total_sq_error_vs_ours_max_rel_diff"] = float(((tot - ours).abs() / ours.clamp(min=1e-12)).max())
                if "marker_error_RMS" in e.names:
                    own = e.values[:, e.names.index("marker_error_RMS")].double()
                    oso["own_reported_mean_rms_mm"] = 1e3 * float(own.mean())
                    oso["own_rms_vs_ours_max_abs_diff_mm"] = 1e3 * float((own - rms_os).abs().max())
                    oso["own_rms_vs_sqrt_total_over_all_markers_max_abs_diff_mm"] = 1e3 * float(
                        (own - torch.sqrt(tot / trial.n_markers)).abs().max())
                    oso["own_rms_vs_sqrt_total_over_present_markers_max_abs_diff_mm"] = 1e3 * float(
                        (own - torch.sqrt(tot / n_present.clamp(min=1))).abs().max())
        # OpenSim's model marker locations at its solution vs kinfunc FK at the same q
        locs = sorted(folder.glob("*marker_locations.sto"))
        if locs:
            L = kf.io.read_mot(locs[0])
            cols = [[L.names.index(f"{n}_{a}") for a in ("tx", "ty", "tz")] for n in model.marker_names]
            p_os = L.values.double()[:, torch.tensor(cols)]
            if p_os.shape[0] == q_os.shape[0]:
                with torch.no_grad():
                    p_kf = kf.marker_positions(model, q_os.to(model.dtype)).double()
                oso["fk_check_max_m"] = float((p_os - p_kf).abs().max())
        oso["max_clamped_limit_violation"] = limit_violations(model, q_os)
        oso["max_clamped_limit_violation_except_full_turn"] = limit_violations(model, q_os, skip_full_turn=True)
        frames = torch.arange(trial.n_frames)
        disp = truth["displaced"]["frames"].long()
        swap = truth["swap"]["frames"].long()
        clean = frames[~(torch.isin(frames, disp) | torch.isin(frames, swap))]
        windows = {"displaced_window": disp, "swap_window": swap, "clean_frames": clean}
        oso.update(stats_mm(rms_os))
        oso.update(coordinate_errors(model, q_os, q_true, windows))
        r["opensim"] = oso
        for name in engines:
            k = res[name]
            q = k.q.double()
            e = {"median_s": statistics.median(times[name]), "min_s": min(times[name]), "all_s": times[name],
                 "iterations": k.iterations,
                 "converged": bool(k.converged.all()) if isinstance(k.converged, torch.Tensor) else bool(k.converged),
                 "summary": k.summary(), "warnings": warned[name], "max_clamped_limit_violation": limit_violations(model, q),
                 "max_clamped_limit_violation_except_full_turn": limit_violations(model, q, skip_full_turn=True)}
            rms = per_frame_rms(model, q, trial)
            e.update(stats_mm(rms))
            e.update(coordinate_errors(model, q, q_true, windows))
            e["time_ratio_opensim_run_over_this"] = wall / e["median_s"]
            d = (rms - rms_os) * 1e3
            d = d[~torch.isnan(d)]
            e["rms_minus_opensim_mm"] = {"mean": float(d.mean()), "max": float(d.max()), "min": float(d.min())}
            e["per_frame_rms_mm"] = [round(float(x) * 1e3, 3) for x in rms]
            r[name] = e
        oso["per_frame_rms_mm"] = [round(float(x) * 1e3, 3) for x in rms_os]
        out["kinds"][kind] = r
        g = r["trc_read_by_opensim"]
        print(f"[{SYNTHETIC}] {kind}: OpenSim {oso['mean_mm']:.2f} mm / {oso['mean_coord_rms_deg']:.2f} deg "
              f"({wall:.2f} s), kinfunc {r['kinfunc']['mean_mm']:.2f} mm / {r['kinfunc']['mean_coord_rms_deg']:.2f} deg "
              f"({r['kinfunc']['median_s']:.3f} s), robust {r['kinfunc_robust']['mean_mm']:.2f} mm / "
              f"{r['kinfunc_robust']['mean_coord_rms_deg']:.2f} deg ({r['kinfunc_robust']['median_s']:.3f} s); "
              f"TRC gaps read {'OK' if g['ok'] else 'WRONG'}", flush=True)
    return out


ENGINE_LABEL = {"opensim": "opensim", "kinfunc": "kinfunc", "kinfunc_robust": "kinfunc robust",
                "kinfunc_robust_smooth": "robust+smooth 1"}


def _synth_table(s):
    hdr = ("kind", "engine", "mean mm", "max mm", "coord deg", "worst coord deg", "pelvis deg mean/max", "time s",
           "OpenSim/kf")
    rows = [hdr]
    tot = {k: [] for k in ENGINE_LABEL}
    for kind, r in s["kinds"].items():
        for eng, label in ENGINE_LABEL.items():
            e = r[eng]
            tot[eng].append(e)
            if eng == "opensim":
                loop = e.get("frame_loop_s_from_log")
                t = f"{e['run_s']:.2f}" + (f" (loop {loop:.0f})" if loop else "")
                ratio = ""
            else:
                t = f"{e['median_s']:.3f}"
                ratio = f"{e['time_ratio_opensim_run_over_this']:.1f}x"
            rows.append((kind, label, f"{e['mean_mm']:.2f}", f"{e['max_mm']:.1f}", f"{e['mean_coord_rms_deg']:.2f}",
                         f"{e['worst_coord_rms_deg']:.2f} {e['worst_coord']}",
                         f"{e['pelvis_orientation_mean_deg']:.2f} / {e['pelvis_orientation_max_deg']:.1f}", t, ratio))
    os_total = sum(e["run_s"] for e in tot["opensim"])
    for eng, label in ENGINE_LABEL.items():
        es = tot[eng]
        if not es:
            continue
        tt = sum(e["run_s"] if eng == "opensim" else e["median_s"] for e in es)
        rows.append(("ALL (mean)", label, f"{statistics.mean(e['mean_mm'] for e in es):.2f}",
                     f"{max(e['max_mm'] for e in es):.1f}", f"{statistics.mean(e['mean_coord_rms_deg'] for e in es):.2f}",
                     "", f"{statistics.mean(e['pelvis_orientation_mean_deg'] for e in es):.2f} / "
                         f"{max(e['pelvis_orientation_max_deg'] for e in es):.1f}",
                     f"{tt:.2f} (sum)", "" if eng == "opensim" else f"{os_total / tt:.1f}x"))
    w = [max(len(row[i]) for row in rows) for i in range(len(hdr))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    lines.insert(len(lines) - len(ENGINE_LABEL), "  ".join("-" * x for x in w))
    lines.append(f"(synthetic: {Path(s['model']).name}, {s['frames']} frames, noise {s['noise_m'] * 1e3:.1f} mm, 20 % gaps, "
                 "one displaced thigh cluster, one L/R knee-marker swap; marker RMS per frame vs the corrupted "
                 "data (same FK); coord = RMS over frames vs q_true, wrapped, rotational coordinates except pelvis "
                 "angles (mean over coordinates, worst one); pelvis = angle between true and fitted pelvis rotations; "
                 "time = kinfunc median solve, 1 torch thread, OpenSim tool.run() wall (its logged frame loop, "
                 "whole seconds))")
    for kind, r in s["kinds"].items():
        g, o = r["trc_read_by_opensim"], r["opensim"]
        fk = o.get("fk_check_max_m")
        own = o.get("own_total_sq_error_vs_ours_max_rel_diff")
        conv = ("all markers" if (o.get("own_rms_vs_sqrt_total_over_all_markers_max_abs_diff_mm") or 1) < 1e-3
                else "present markers" if (o.get("own_rms_vs_sqrt_total_over_present_markers_max_abs_diff_mm") or 1) < 1e-3
                else "?")
        kw = "; ".join(f"{x}: {' / '.join(r[x]['warnings'])}" for x in ("kinfunc", "kinfunc_robust", "kinfunc_robust_smooth")
                       if r[x]["warnings"])
        lines.append(
            f"{kind}: TRC as OpenSim reads it: {g.get('missing_samples_opensim')} missing samples "
            f"(trial {g.get('missing_samples_trial')}), NaN mask {'equal' if g.get('nan_mask_equal') else 'DIFFERENT'}, "
            f"max |diff| {g.get('max_abs_diff_present_m') or 0:.1e} m; OpenSim's own total squared error per frame "
            f"vs ours over the present markers: max rel diff {own if own is None else f'{own:.1e}'} (its RMS divides "
            f"by {conv}); FK check (OpenSim marker locations vs kinfunc at OpenSim's q) "
            f"{fk if fk is None else f'{fk:.1e}'} m; frames with pelvis error > 10 deg: OpenSim "
            f"{o['pelvis_orientation_frames_gt_10deg']}, kinfunc {r['kinfunc']['pelvis_orientation_frames_gt_10deg']}, "
            f"robust {r['kinfunc_robust']['pelvis_orientation_frames_gt_10deg']}; clamped-limit excess "
            f"(all / except full-turn ranges, rad or m): OpenSim {o['max_clamped_limit_violation']:.2g} / "
            f"{o['max_clamped_limit_violation_except_full_turn']:.2g}, kinfunc "
            f"{r['kinfunc']['max_clamped_limit_violation']:.2g} / {r['kinfunc']['max_clamped_limit_violation_except_full_turn']:.2g}, "
            f"robust {r['kinfunc_robust']['max_clamped_limit_violation']:.2g} / "
            f"{r['kinfunc_robust']['max_clamped_limit_violation_except_full_turn']:.2g}; OpenSim log oddities: "
            f"{len(o['log_oddities'])}; kinfunc warnings: {kw or 'none'}")
    return "\n".join(lines)


_SIDE_BY_SIDE = ("trial", "engine", "frames", "mean", "median", "p99", "max", ">25", ">40", "time s", "OpenSim/kf")


def _side_by_side(results, kf_time):
    """Table lines of kinfunc vs OpenSim per trial; ``kf_time(r) -> (time text, ratio text)``."""
    rows = [_SIDE_BY_SIDE]
    for key, r in results.items():
        if "kinfunc" not in r:
            continue
        for eng in ("kinfunc", "opensim"):
            e = r[eng]
            if eng == "kinfunc":
                t, ratio = kf_time(r)
            else:
                loop = e.get("frame_loop_s_from_log")
                t = f"{e['run_s']:.3f}" + (f" (loop {loop:.3f})" if loop else "")
                ratio = ""
            rows.append((key, eng, str(e["frames_scored"]), f"{e['mean_mm']:.2f}", f"{e['median_mm']:.2f}",
                         f"{e['p99_mm']:.2f}", f"{e['max_mm']:.1f}", str(e["frames_gt_25mm"]), str(e["frames_gt_40mm"]), t, ratio))
    w = [max(len(row[i]) for row in rows) for i in range(len(_SIDE_BY_SIDE))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return lines


def _table(results):
    def kf_time(r):
        e, q = r["kinfunc"]["threads"], r["time_ratio_opensim_run_over_kinfunc"]
        return (f"{e['1']['median_s']:.3f} (2t {e['2']['median_s']:.3f})", f"{q['1']:.1f}x (2t {q['2']:.1f}x)")

    lines = _side_by_side(results, kf_time)
    lines.append("(marker RMS per frame in mm, scored by the same FK; time = kinfunc median solve, 1 torch thread "
                 "(2 threads); OpenSim tool.run() wall (its logged frame loop))")
    for key, r in results.items():
        d = r["diff_kinfunc_minus_opensim"]
        lines.append(f"{key}: kinfunc - OpenSim per-frame RMS: mean {d['mean_mm']:+.3f} mm, max {d['max_mm']:+.2f} mm, "
                     f"min {d['min_mm']:+.2f} mm; kinfunc worse by >0.5 mm in {d['frames_kinfunc_worse_gt_0.5mm']} frames, "
                     f"better by >0.5 mm in {d['frames_kinfunc_better_gt_0.5mm']}; .osim check max "
                     f"{r['osim_export']['check_max_m']:.1e} m ({r['osim_export']['used']})")
    return "\n".join(lines)


def _rotational_mask(model):
    """``(C,)`` bool: independent coordinates that drive a rotation slot (0-2) with a non-constant
    function. (``topology.coordinate_motion`` takes a coordinate's first use: ``full_body``'s
    ``arm_flex`` / ``arm_add`` drive the girdle's translations before the shoulder's rotations and
    are marked translational there.)"""
    topo = model.topology
    rot = [False] * topo.n_coordinates
    for g in topo.slot_groups:
        if g.key[0] is not KF.FnKind.CONSTANT:
            for o, i in zip(g.outputs, g.inputs):
                if o % 6 < 3 and i < topo.n_coordinates:
                    rot[i] = True
    return torch.tensor(rot)


def _read_opensim_q(osim, osim_path, mot, model):
    """OpenSim's .mot as ``(motion, q (T, C))`` in ``model``'s coordinate order, SI units: the
    columns of the coordinates OpenSim itself types as rotational converted from degrees (when
    the header says ``inDegrees=yes``), as OpenSim wrote them (``kf.io.read_mot(mot, model=...)``
    converts by the kinfunc model's ``coordinate_motion``, see :func:`_rotational_mask`)."""
    om = osim.Model(str(osim_path))
    cs = om.getCoordinateSet()
    rot = {cs.get(i).getName(): cs.get(i).getMotionType() == osim.Coordinate.Rotational for i in range(cs.getSize())}
    motion = kf.io.read_mot(mot, in_degrees=False)
    deg = str(motion.header.get("inDegrees", "no")).lower() == "yes"
    scale = torch.tensor([math.pi / 180 if deg and rot.get(n, False) else 1.0 for n in motion.names], dtype=torch.float64)
    v = motion.values.double() * scale
    missing = [n for n in model.coordinate_names if n not in motion.names]
    if missing:
        raise KeyError(f"{mot}: no column for {missing}")
    return motion, v[:, [motion.names.index(n) for n in model.coordinate_names]]


def _worst_frames(model, q_kf, q_os, trial, rms_kf, rms_os, n=10):
    """The ``n`` frames where kinfunc's RMS exceeds OpenSim's the most (> 0.5 mm): both RMS, the
    markers whose error grows the most (kinfunc |error| - OpenSim |error|, mm) and the coordinates
    that differ the most (deg for rotational, mm for translational)."""
    diff = (rms_kf - rms_os) * 1e3
    ok = ~torch.isnan(diff)
    idx = torch.nonzero(ok & (diff > 0.5)).flatten()
    idx = idx[torch.argsort(diff[idx], descending=True)][:n]
    if not len(idx):
        return []
    cols = [model.marker_names.index(nm) for nm in trial.names]
    with torch.no_grad():
        e_kf = (kf.marker_positions(model, q_kf[idx].to(model.dtype)).double()[:, cols] - trial.xyz[idx].double()).norm(dim=-1)
        e_os = (kf.marker_positions(model, q_os[idx].to(model.dtype)).double()[:, cols] - trial.xyz[idx].double()).norm(dim=-1)
    rot = _rotational_mask(model)
    dq = q_kf[idx].double() - q_os[idx].double()
    dq = torch.where(rot, _wrap(dq) * (180 / math.pi), dq * 1e3)
    out = []
    for k, f in enumerate(idx.tolist()):
        de = torch.nan_to_num(e_kf[k] - e_os[k], nan=0.0) * 1e3
        top_m = torch.argsort(de, descending=True)[:4].tolist()
        top_q = torch.argsort(dq[k].abs(), descending=True)[:4].tolist()
        out.append({
            "frame": f, "time_s": round(float(trial.time[f]), 4), "kinfunc_mm": round(float(rms_kf[f]) * 1e3, 3),
            "opensim_mm": round(float(rms_os[f]) * 1e3, 3),
            "kinfunc_minus_opensim_mm": round(float(diff[f]), 3),
            "markers_worse_mm": {trial.names[i]: [round(float(e_kf[k, i]) * 1e3, 2), round(float(e_os[k, i]) * 1e3, 2)]
                                 for i in top_m},
            "coordinates_kf_minus_os": {model.coordinate_names[i]: round(float(dq[k, i]), 2) for i in top_q},
        })
    return out


def bench_full_body_real(key, args, osim, workdir):
    """``--full-body``: ``kf.models.full_body("cmu")`` (whole body, 41 CMU markers) fitted to the
    real trial (scales + offsets + poses in one solve, 2 torch threads: the fit's own numbers),
    then, as :func:`bench_trial` does for the lower body, the fitted model exported through
    :func:`build_osim_api` (checked by :func:`check_osim_fk` over the clamped coordinates' whole
    ranges) and pose-only IK on the same markers by both engines, scored by the same FK."""
    path = DATA / TRIALS[key]
    model = kf.models.full_body("cmu", dtype=torch.float64)
    trial, info = load_trial(path, model, args.max_frames.get(key))
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    res = kf.ik.solve(model, trial, fit=("pose", "segment_scales", "marker_offsets"))
    wall = time.perf_counter() - t0
    rms = 1e3 * res.marker_rms[torch.isfinite(res.marker_rms)].double()
    out = {"frames": trial.n_frames, "markers": len(info["markers_used"]), "wall_s": wall,
           "mean_mm": float(rms.mean()), "p99_mm": float(rms.quantile(0.99)), "max_mm": float(rms.max()),
           "frames_over_40mm": int((rms > 40).sum()), "doubtful_frames": int(res.quality.frame_flags.sum()),
           "restarted_frames": len(res.quality.restarted), "summary": res.summary(),
           "note": "frames ... summary: the fit (scales + offsets + poses, 2 torch threads), whole take; "
                   "kinfunc / opensim: pose-only IK with the fitted model, side by side"}
    print(f"[{key}] full body (cmu, 41 markers) fit: mean {out['mean_mm']:.2f} mm, p99 {out['p99_mm']:.1f}, "
          f"max {out['max_mm']:.1f}, >40 mm {out['frames_over_40mm']}, {wall:.1f} s", flush=True)
    fitted = res.model

    # the fitted model as .osim (API build) + FK check
    folder = Path(workdir) / f"{key}_full_body"
    folder.mkdir(parents=True, exist_ok=True)
    export = folder / "fitted_full_body_api.osim"
    exp = {"used": "fitted model built directly through the OpenSim API (save_osim cannot write kinfunc's "
                   "natural-end splines nor a model without its .osim)"}
    build_osim_api(osim, model, folder / "nominal_full_body_api.osim")
    exp["nominal_check_max_m"] = check_osim_fk(osim, folder / "nominal_full_body_api.osim", model, whole_ranges=True)
    build_osim_api(osim, fitted, export)
    exp.update(build_osim_api.last_info)
    exp["check_max_m"] = check_osim_fk(osim, export, fitted, whole_ranges=True)
    exp["check_coupler_constraint_error_max"] = check_osim_fk.last_constraint_error
    exp["check"] = ("20 random poses, clamped coordinates over their whole ranges, others within +-1.4 rad / m; "
                    "coupled coordinates set from the independent ones by the constraint's own function")
    out["osim_export"] = exp
    print(f"[{key}] full body .osim: {len(exp['couplers'])} coupler constraints, split joints {exp['split_joints']}; "
          f"OpenSim vs kinfunc marker positions at 20 random poses: max {exp['check_max_m']:.2e} m "
          f"(nominal {exp['nominal_check_max_m']:.2e} m)", flush=True)
    if exp["check_max_m"] > 1e-6:
        raise RuntimeError(f"exported full-body model disagrees with kinfunc FK by {exp['check_max_m']} m")

    # pose-only IK, both engines, on the first --full-body-frames frames (default all)
    n_cmp = args.full_body_frames.get(key)
    cmp = trial
    if n_cmp and trial.n_frames > n_cmp:
        cmp = dataclasses.replace(trial, xyz=trial.xyz[:n_cmp], time=trial.time[:n_cmp])
    out["compared_frames"] = cmp.n_frames
    trc = folder / "trial.trc"
    kf.io.write_trc(trc, cmp)
    kfo = {"torch_threads": 1, "all_s": []}
    pose = None

    def kf_round(n):
        nonlocal pose
        torch.set_num_threads(1)
        for _ in range(n):
            t0 = time.perf_counter()
            pose = kf.ik.solve(fitted, cmp, fit=("pose",))
            kfo["all_s"].append(time.perf_counter() - t0)

    load = [os.getloadavg()[0]]
    kf_round(max(1, (args.repeats + 1) // 2))
    load.append(os.getloadavg()[0])
    print(f"[{key}] full body: OpenSim IK on {cmp.n_frames} frames ...", flush=True)
    wall_os, loop, mot, sto, log = run_opensim_ik(osim, export, trc, cmp.names, float(cmp.time[0]), float(cmp.time[-1]), folder)
    load.append(os.getloadavg()[0])
    kf_round(max(1, args.repeats // 2))
    load.append(os.getloadavg()[0])
    out["load_avg_1min_around_timings"] = load
    kfo["median_s"] = statistics.median(kfo["all_s"])
    kfo["min_s"] = min(kfo["all_s"])
    kfo["iterations"] = pose.iterations
    kfo["converged"] = bool(pose.converged) if not isinstance(pose.converged, torch.Tensor) else bool(pose.converged.all())
    kfo["summary"] = pose.summary()
    kfo["doubtful_frames"] = int(pose.quality.frame_flags.sum())
    q_kf = pose.q.double()
    kfo["max_clamped_limit_violation"] = limit_violations(fitted, q_kf)
    motion, q_os = _read_opensim_q(osim, export, mot, fitted)
    oso = {"run_s": wall_os, "frame_loop_s_from_log": loop, "frames_in_mot": int(q_os.shape[0]),
           "max_clamped_limit_violation": limit_violations(fitted, q_os), "log_oddities": _log_oddities(log)[:20]}
    q_os = _align_by_time(motion, cmp, q_os, oso)
    rms_kf = per_frame_rms(fitted, q_kf, cmp)
    rms_os = per_frame_rms(fitted, q_os, cmp)
    kfo.update(stats_mm(rms_kf))
    oso.update(stats_mm(rms_os))
    out["kinfunc"] = kfo
    out["opensim"] = oso
    out["diff_kinfunc_minus_opensim"], worse = _per_frame_diff(rms_kf, rms_os, cmp.time)
    out["diff_kinfunc_minus_opensim"]["worst_frames"] = _worst_frames(fitted, q_kf, q_os, cmp, rms_kf, rms_os)
    # where kinfunc is worse: is a joint in another branch (coordinates > 30 deg apart)?
    rot = _rotational_mask(fitted)
    names_rot = [n for n, f in zip(fitted.coordinate_names, rot.tolist()) if f]
    dq = (_wrap(q_kf - q_os) * (180 / math.pi))[:, rot].abs()
    far = dq[worse] > 30
    counts = {}
    for row in far:
        for j in torch.nonzero(row).flatten().tolist():
            counts[names_rot[j]] = counts.get(names_rot[j], 0) + 1
    near = ~far.any(-1)
    out["diff_kinfunc_minus_opensim"].update({
        "worse_frames_with_a_coordinate_gt_30deg_apart": int(far.any(-1).sum()),
        "coordinates_gt_30deg_apart_in_worse_frames": dict(sorted(counts.items(), key=lambda t: -t[1])),
        "worse_frames_all_coordinates_within_30deg_max_mm":
            float(((rms_kf - rms_os) * 1e3)[worse][near].max()) if near.any() else None,
    })
    # the same pose-only solve started at OpenSim's solution (init=q): same objective -> same or
    # lower cost there; frames it fixes were another local minimum, not a different optimum
    torch.set_num_threads(1)
    r0 = kf.ik.solve(fitted, cmp, fit=("pose",), init=q_os.to(fitted.dtype))
    x0 = (per_frame_rms(fitted, r0.q.double(), cmp) - rms_os) * 1e3
    x0 = x0[~torch.isnan(x0)]
    out["kinfunc_started_at_opensim_q"] = {
        "mean_mm": float((rms_os[~torch.isnan(rms_os)] * 1e3 + x0).mean()), "minus_opensim_max_mm": float(x0.max()),
        "minus_opensim_min_mm": float(x0.min()), "frames_worse_gt_0.5mm": int((x0 > 0.5).sum()),
        "frames_better_gt_0.5mm": int((x0 < -0.5).sum())}
    out["time_ratio_opensim_run_over_kinfunc"] = wall_os / kfo["median_s"]
    if loop:
        out["time_ratio_opensim_frame_loop_over_kinfunc"] = loop / kfo["median_s"]
    out["per_frame_rms_mm"] = {"kinfunc": [round(float(x) * 1e3, 3) for x in rms_kf],
                               "opensim": [round(float(x) * 1e3, 3) for x in rms_os]}
    print(f"[{key}] full body pose-only IK: kinfunc {kfo['mean_mm']:.2f} mm ({kfo['median_s']:.2f} s), OpenSim "
          f"{oso['mean_mm']:.2f} mm ({wall_os:.1f} s), {out['time_ratio_opensim_run_over_kinfunc']:.1f}x; kinfunc worse "
          f"by > 0.5 mm in {worse.numel()} frames", flush=True)
    return out


def _fb_table(full):
    lines = _side_by_side(
        full, lambda r: (f"{r['kinfunc']['median_s']:.3f}", f"{r['time_ratio_opensim_run_over_kinfunc']:.1f}x")
    )
    lines.append("(full_body('cmu'), 41 markers, fitted by kinfunc (scales + offsets + poses), then pose-only IK by both "
                 "engines on the fitted model; marker RMS per frame in mm, scored by the same FK; time = kinfunc median "
                 "solve, 1 torch thread; OpenSim tool.run() wall (its logged frame loop))")
    for key, r in full.items():
        if "kinfunc" not in r:
            continue
        d, x = r["diff_kinfunc_minus_opensim"], r["osim_export"]
        lines.append(f"{key} (full body; fit on {r['frames']} frames: mean {r['mean_mm']:.2f} mm, p99 {r['p99_mm']:.1f}, "
                     f"max {r['max_mm']:.1f}, >40 mm {r['frames_over_40mm']}, {r['wall_s']:.1f} s, 2 threads): "
                     f"kinfunc - OpenSim per-frame RMS: mean {d['mean_mm']:+.3f} mm, max {d['max_mm']:+.2f} mm, "
                     f"min {d['min_mm']:+.2f} mm; kinfunc worse by >0.5 mm in {d['frames_kinfunc_worse_gt_0.5mm']} "
                     f"frames ({d['worse_frames_with_a_coordinate_gt_30deg_apart']} of them with a coordinate > 30 deg "
                     f"from OpenSim's: {', '.join(list(d['coordinates_gt_30deg_apart_in_worse_frames'])[:4]) or '-'}), "
                     f"better by >0.5 mm in {d['frames_kinfunc_better_gt_0.5mm']}; started at OpenSim's q, kinfunc is "
                     f"worse by >0.5 mm in {r['kinfunc_started_at_opensim_q']['frames_worse_gt_0.5mm']} frames, better in "
                     f"{r['kinfunc_started_at_opensim_q']['frames_better_gt_0.5mm']}; .osim check max "
                     f"{x['check_max_m']:.1e} m ({len(x['couplers'])} couplers, split {', '.join(x['split_joints']) or 'none'})")
    return "\n".join(lines)


def _git_state():
    """The commit and the files modified in the working tree (uncommitted kinfunc changes shape
    the numbers); ``None`` outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        st = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head or None, "modified": [ln[3:] for ln in st.splitlines() if ln[:2].strip()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", nargs="*", default=[*TRIALS, SYNTHETIC], choices=[*TRIALS, SYNTHETIC],
                    help=f"real trials and/or '{SYNTHETIC}' (the full-body synthetic suite); default all")
    ap.add_argument("--max-frames", type=int, default=None, help="keep each trial's first N frames (default all)")
    ap.add_argument("--repeats", type=int, default=6,
                    help="timed kinfunc pose solves with 1 torch thread (median; half before, half after the OpenSim run)")
    ap.add_argument("--repeats-2t", type=int, default=2,
                    help="the same with 2 torch threads (few: on a loaded 2-core machine they can take 10x longer)")
    ap.add_argument("--fit-threads", type=int, default=1, help="torch threads for the (untimed-for-comparison) model fit")
    ap.add_argument("--synth-frames", type=int, default=240, help="frames per synthetic trial")
    ap.add_argument("--synth-noise", type=float, default=0.0029, help="synthetic marker noise (m, per axis)")
    ap.add_argument("--synth-seed", type=int, default=0)
    ap.add_argument("--synth-kinds", nargs="*", default=list(NONGAIT_KINDS), choices=list(NONGAIT_KINDS))
    ap.add_argument("--synth-repeats", type=int, default=4,
                    help="timed kinfunc solves per synthetic trial and variant, 1 torch thread (median; half before, "
                         "half after the OpenSim run)")
    ap.add_argument("--full-body", action="store_true",
                    help="also fit kf.models.full_body('cmu') (41 markers, arms included) to each real trial: scales, "
                         "offsets and poses, kinfunc only (bench_full_body_real in the JSON)")
    ap.add_argument("--full-body-frames", default=None,
                    help="with --full-body: compare the engines on the first N frames of each take (N, or "
                         "take=N,take=N; default all; the fit uses the whole take either way)")
    ap.add_argument("--direct-osim", action="store_true", help="skip save_osim; build the fitted model through the API")
    ap.add_argument("--keep", default=None, help="folder to keep the .osim/.trc/.mot files in (default: a temp folder)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "ik_nongait.json"))
    args = ap.parse_args()
    args.max_frames = {k: args.max_frames for k in TRIALS}
    fbf = args.full_body_frames
    if fbf is None or "=" not in fbf:
        args.full_body_frames = {k: (int(fbf) if fbf else None) for k in TRIALS}
    else:
        args.full_body_frames = {k: None for k in TRIALS} | {k: int(v) for k, v in (p.split("=") for p in fbf.split(","))}
    try:
        import opensim as osim
    except ImportError:
        sys.exit("opensim is not installed (pip install opensim): this benchmark compares against it")
    osim.Logger.removeFileSink()
    osim.Logger.setLevelString("info")  # OpenSim logs its frame-loop time; captured, not printed
    kf.allocator.retain_freed_memory()
    t_all = time.perf_counter()
    workdir = args.keep or tempfile.mkdtemp(prefix="kf_ik_nongait_")
    results = {}
    for key in args.trials:
        if key == SYNTHETIC:
            results[key] = bench_synthetic(args, osim, workdir)
        else:
            results[key] = bench_trial(key, args, osim, workdir)
    full = {}
    if args.full_body:
        for key in (k for k in args.trials if k != SYNTHETIC):
            full[key] = bench_full_body_real(key, args, osim, workdir)
    total = time.perf_counter() - t_all
    real = {k: v for k, v in results.items() if k != SYNTHETIC}
    table = "\n\n".join(([_table(real)] if real else []) + ([_fb_table(full)] if full else [])
                         + ([_synth_table(results[SYNTHETIC])] if SYNTHETIC in results else []))
    print()
    print(table)
    print(f"total run time {total:.1f} s; files in {workdir}")
    doc = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                    "torch": torch.__version__, "opensim": getattr(osim, "__version__", None)},
        "git": _git_state(),
        "args": {"trials": args.trials, "max_frames": args.max_frames, "repeats": args.repeats,
                 "repeats_2t": args.repeats_2t, "fit_threads": args.fit_threads, "synth_frames": args.synth_frames,
                 "synth_noise": args.synth_noise, "synth_seed": args.synth_seed, "synth_kinds": args.synth_kinds,
                 "synth_repeats": args.synth_repeats, "full_body": args.full_body,
                 "full_body_frames": args.full_body_frames},
        "total_run_s": total,
        "table": table,
        "trials": results,
        "full_body": full,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
