"""A starting pose for IK that does not depend on the motion: a segment-by-segment sweep.

The old start (root from a rigid fit, every other coordinate at its default) only works near
the default pose: a deep squat, a kick or a body lying on the floor starts GN in the wrong basin.
Here the tree is walked from the root down, and every segment is placed from its own markers:

1. the root body from a weighted rigid (Kabsch) fit of its markers (:mod:`kinfunc.ik.init`);
2. then, level by level, each joint from the markers of its child body. A *unit* is a joint
   whose child carries markers, together with the joints of unmarked bodies above it (a talus
   without markers joins the calcaneus below it). The unit's markers are written about the
   joint centre in the child joint frame, the measured ones about the centre's world position
   (fixed by the parent, already placed) in the parent joint frame, and the joint's
   coordinates read off in closed form, every unit of a level in one batch: a hinge (one
   rotation slot linear in its coordinate, any axis, constant slots around it) by the angle
   that best turns one onto the other; a ball (three orthogonal axes, each linear in its own
   coordinate) by a rotation-only Procrustes fit decomposed into the axes' Euler angles, of
   its two Euler solutions the one inside the range. A unit without a closed form gets a grid
   search over its one coordinate, and such levels a few Levenberg-Marquardt steps on their
   own coordinates and markers. A ball whose own markers leave its twist open (a shoulder
   placed by its elbow keypoint alone) is fitted together with the markers of the joints
   hanging below it, over a grid of the one joint angle below (the wrist shows the humerus'
   rotation whenever the elbow is bent: :func:`_with_children`).
3. Where a level's markers move with coordinates only a later level sets (the shoulder girdle
   rises with the arm, so the shoulder keypoints on the trunk follow the arm's elevation), the
   sweep runs twice, the second from the first's pose.

Nothing is sequential in time and every step is a batched tensor operation over frames. The
full solve (:mod:`kinfunc.ik.gn`) then starts from this pose; :mod:`kinfunc.ik.repair` restarts
frames that still end far above their neighbours. :func:`continuous_in_time` rewrites solved
poses without jumps of whole turns or Euler solutions (for smoothness terms).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import functions as F
from .. import transforms as tf
from ..model import Model, Topology
from ..fk import fk, marker_positions
from .gn import _damped_step
from .init import _robust_template_fit, initial_q, linear_params, procrustes_rotation, root_coordinates
from .jacobian import JacobianPlan, MarkerTargets, ModelKinematics

__all__ = ["segment_start", "StartOptions"]


@dataclasses.dataclass(frozen=True)
class StartOptions:
    """``iterations``: most LM iterations of a stage refined by LM (those with a joint without a
    closed form; every stage with ``refine``); ``grid``: values tried for a one-coordinate
    joint without a closed form; ``children``: a ball whose own markers leave its twist open
    may take it from the markers below (:func:`_with_children`; the sweep is then also run
    without, and each frame keeps the start with the lower cost)."""

    iterations: int = 6
    refine: bool = False
    grid: int = 12
    children: bool = True


@dataclasses.dataclass(frozen=True)
class _Unit:
    top: int  # the unit's top body (its joint is the one set in closed form)
    columns: tuple[int, ...]  # free coordinates of the unit's joints
    top_columns: tuple[int, ...]  # those driving the top joint
    markers: tuple[int, ...]  # markers on the unit's marked bodies


@dataclasses.dataclass(frozen=True)
class _Stage:
    columns: tuple[int, ...]  # free coordinates solved in this stage
    markers: tuple[int, ...]  # markers that place them
    units: tuple[_Unit, ...]


def _independent_inputs(topo: Topology, i: int) -> set[int]:
    """Independent coordinates behind full-coordinate index ``i`` (through couplers)."""
    C = topo.n_coordinates
    if i < C:
        return {i}
    out: set[int] = set()
    for g in topo.coupler_groups:
        for o, j in zip(g.outputs, g.inputs):
            if o == i - C:
                out |= _independent_inputs(topo, j)
    return out


@functools.lru_cache(maxsize=32)
def _drives(topo: Topology) -> tuple[frozenset[int], ...]:
    """Per body, the free independent coordinates that move its joint (through couplers; static)."""
    B, C = topo.n_bodies, topo.n_coordinates
    drives: list[set[int]] = [set() for _ in range(B)]
    for g in topo.slot_groups:
        if g.key[0] is F.FnKind.CONSTANT:
            continue
        for o, i in zip(g.outputs, g.inputs):
            drives[o // 6] |= {c for c in _independent_inputs(topo, i) if c < C and not topo.coordinate_locked[c]}
    return tuple(frozenset(d) for d in drives)


@functools.lru_cache(maxsize=32)
def _stages(topo: Topology) -> tuple[_Stage, ...]:
    """The sweep's stages (static, per topology): units grouped by the depth of their top body."""
    B = topo.n_bodies
    drives = _drives(topo)
    children, depth = topo.schedule.children, topo.schedule.depth
    marked = [False] * B
    for b in topo.marker_bodies:
        marked[b] = True
    covered = {0}
    by_depth: dict[int, list[_Unit]] = {}
    for b in range(1, B):
        if b in covered:
            continue
        unit, frontier, ends = [b], [b], []
        while frontier:  # down through unmarked bodies to the first marked ones
            x = frontier.pop()
            if marked[x]:
                ends.append(x)
            else:
                for ch in children[x]:
                    unit.append(ch)
                    frontier.append(ch)
        covered |= set(unit)
        cols = set().union(*(drives[x] for x in unit))
        markers = tuple(m for m, mb in enumerate(topo.marker_bodies) if mb in ends)
        if markers and cols:
            by_depth.setdefault(depth[b], []).append(_Unit(b, tuple(sorted(cols)), tuple(sorted(drives[b])), markers))
    stages = []
    done: set[int] = set()
    for d in sorted(by_depth):
        cols = sorted(set().union(*(u.columns for u in by_depth[d])) - done)
        done |= set(cols)
        if cols:
            markers = tuple(sorted(set().union(*(u.markers for u in by_depth[d]))))
            stages.append(_Stage(tuple(cols), markers, tuple(by_depth[d])))
    return tuple(stages)


def _linear_slots(model: Model, b: int) -> dict[int, tuple[int, Tensor, Tensor]]:
    """Rotation slots (0-2) of body ``b``'s joint that are a linear function of one independent
    coordinate: slot -> (coordinate, slope, intercept)."""
    return {s_: (c, model.slot_params[g][0][j], model.slot_params[g][1][j]) for s_, (c, g, j) in _linear_index(model.topology, b).items()}


@functools.lru_cache(maxsize=256)
def _linear_index(topo: Topology, b: int) -> dict[int, tuple[int, int, int]]:
    """Static part of :func:`_linear_slots`: slot -> (coordinate, slot group, position in it)."""
    out = {}
    for gi, g in enumerate(topo.slot_groups):
        if g.key[0] is not F.FnKind.LINEAR:
            continue
        for k, (o, i) in enumerate(zip(g.outputs, g.inputs)):
            if o // 6 == b and o % 6 < 3 and i < topo.n_coordinates and not topo.coordinate_locked[i]:
                out[o % 6] = (i, gi, k)
    return out


def _varying_slots(topo: Topology, b: int) -> set[int]:
    out = set()
    for g in topo.slot_groups:
        if g.key[0] is F.FnKind.CONSTANT:
            continue
        out |= {o % 6 for o in g.outputs if o // 6 == b and o % 6 < 3}
    return out


@dataclasses.dataclass(frozen=True)
class _Kind:
    """Units of one stage whose top joint has one closed form: ``bodies`` (top bodies),
    ``slots`` (varying rotation slots per unit: 1 for a hinge, 3 for a ball), ``cols``
    (coordinate per slot), ``params`` ((slot group, position) per slot), ``markers`` (per unit,
    padded with -1)."""

    bodies: tuple[int, ...]
    slots: tuple[tuple[int, ...], ...]
    cols: tuple[tuple[int, ...], ...]
    params: tuple[tuple[tuple[int, int], ...], ...]
    markers: tuple[tuple[int, ...], ...]


@functools.lru_cache(maxsize=64)
def _closed_form_units(topo: Topology, stage: _Stage) -> tuple[Optional[_Kind], Optional[_Kind], tuple[_Unit, ...]]:
    """A stage's units split by closed form (static): hinges, balls (three varying linear rotation
    slots of distinct coordinates) and the rest, which also takes units with free joints below
    their top one (an unmarked talus above a marked calcaneus: the top joint is set with the
    others at their defaults, then the stage is refined)."""
    groups: dict[int, list] = {1: [], 3: []}
    left = []
    for u in stage.units:
        idx = _linear_index(topo, u.top)
        vary = _varying_slots(topo, u.top)
        ok = vary and vary <= set(idx) and len({idx[s_][0] for s_ in vary}) == len(vary) and len(vary) in (1, 3)
        if not ok:
            left.append(u)
            continue
        slots = tuple(sorted(vary))
        groups[len(vary)].append((u, slots))  # (free joints below the top one keep their defaults)
    kinds = []
    for n in (1, 3):
        us = groups[n]
        if not us:
            kinds.append(None)
            continue
        k = max(len(u.markers) for u, _ in us)
        kinds.append(
            _Kind(
                tuple(u.top for u, _ in us),
                tuple(sl for _, sl in us),
                tuple(tuple(_linear_index(topo, u.top)[s_][0] for s_ in sl) for u, sl in us),
                tuple(tuple(_linear_index(topo, u.top)[s_][1:] for s_ in sl) for u, sl in us),
                tuple(tuple(u.markers) + (-1,) * (k - len(u.markers)) for u, _ in us),
            )
        )
    return kinds[0], kinds[1], tuple(left)


@functools.lru_cache(maxsize=64)
@functools.lru_cache(maxsize=64)
def _ball_children(
    topo: Topology, stage: _Stage
) -> Optional[tuple[tuple[int, ...], tuple[tuple[int, ...], ...], tuple[int, ...]]]:
    """For the ball units of ``stage`` (the order of :func:`_closed_form_units`' ball kind), the
    units of later stages hanging from the ball's top body (an elbow below a shoulder, a knee
    below a hip, a head and shoulder blades below a trunk): the one free coordinate of the
    first of them whose joint has one (-1 where none), their markers (padded with -1), and
    every coordinate that moves a body below any of the balls' top bodies (what those markers'
    positions in the top bodies' frames depend on). ``None`` when no ball has such children
    (static, per topology)."""
    _, ball, _ = _closed_form_units(topo, stage)
    if ball is None:
        return None
    later = [u for st in _stages(topo) for u in st.units]
    cols, markers = [], []
    for b, bc in zip(ball.bodies, ball.cols):
        ch = [u for u in later if topo.parents[u.top] == b]
        one = [u.top_columns[0] for u in ch if len(u.top_columns) == 1 and u.top_columns[0] not in bc]
        cols.append(one[0] if one else -1)
        markers.append(tuple(m for u in ch for m in u.markers))
    if not any(markers):
        return None
    drives, kids = _drives(topo), topo.schedule.children
    desc: set[int] = set()
    stack = [c for b in ball.bodies for c in kids[b]]
    while stack:
        x = stack.pop()
        desc |= drives[x]
        stack.extend(kids[x])
    k = max(len(m) for m in markers)
    return tuple(cols), tuple(tuple(m) + (-1,) * (k - len(m)) for m in markers), tuple(sorted(desc))


def _rodrigues(a: Tensor, v: Tensor) -> Tensor:
    """Rotations ``(..., 3, 3)`` about unit axes ``a (..., 3)`` by ``v (...)``."""
    K = tf.skew(a)
    s, c = torch.sin(v)[..., None, None], torch.cos(v)[..., None, None]
    return torch.eye(3, dtype=a.dtype, device=a.device) + s * K + (1.0 - c) * (K @ K)


def _rotation_fit(U: Tensor, Y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Rotations ``R (..., 3, 3)`` about the origin minimising ``sum_i w_i |R u_i - y_i|^2`` for
    ``U, Y (..., k, 3)``, ``w (..., k)``, and ``ok (...)``: at least two points with weight
    (with the origin, three points fix a rotation), or one point off the origin (then the
    least rotation taking it onto its target direction)."""
    R = procrustes_rotation((U * w[..., None]).transpose(-1, -2) @ Y)  # H = sum w u y^T
    # one point (a keypoint per segment): the least rotation taking it onto its measured
    # direction (its twist is left for the next level and the solver)
    n = (w > 0).sum(-1)
    u = (U * (w[..., None] > 0)).sum(-2)
    y = (Y * (w[..., None] > 0)).sum(-2)
    nu, ny = torch.linalg.vector_norm(u, dim=-1), torch.linalg.vector_norm(y, dim=-1)
    tiny = 1e-9
    uh, yh = u / nu.clamp_min(tiny)[..., None], y / ny.clamp_min(tiny)[..., None]
    v = torch.linalg.cross(uh, yh)
    c = (uh * yh).sum(-1)
    Kv = tf.skew(v)
    eye = torch.eye(3, dtype=U.dtype, device=U.device)
    swing = eye + Kv + (Kv @ Kv) / (1.0 + c).clamp_min(1e-6)[..., None, None]
    one = (n == 1) & (nu > tiny) & (ny > tiny) & (c > -1.0 + 1e-6)
    R = torch.where(one[..., None, None], swing, R)
    return R, (n >= 2) | one


def _hinge_angles(U: Tensor, Y: Tensor, w: Tensor, axis: Tensor, pre: Tensor, post: Tensor) -> Tensor:
    """Hinge angles ``(T, n)`` best turning points ``U`` onto ``Y`` (``(T, n, k, 3)``, about the
    joint centre; ``Y = pre R_a(angle) post U``) with weights ``w (T, n, k)``, unit axes
    ``axis (n, 3)``, constant slot rotations ``pre``/``post (n, 3, 3)``: the angle maximising
    ``tr(R_a K)``, ``K = sum w (post u)(pre^T y)^T`` (one marker off the axis is enough)."""
    K = ((U @ post.transpose(-1, -2)[None]) * w[..., None]).transpose(-1, -2) @ (Y @ pre[None])  # (T, n, 3, 3)
    skew_tr = (tf.skew(axis)[None] * K.transpose(-1, -2)).sum((-1, -2))  # tr([a]x K)
    tr = K.diagonal(dim1=-2, dim2=-1).sum(-1)
    aKa = (axis[None, :, :, None] * K * axis[None, :, None, :]).sum((-1, -2))
    return torch.atan2(skew_tr, tr - aKa)


def _ball_angles(U: Tensor, Y: Tensor, w: Tensor, Q: Tensor, flip: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ball joints with orthonormal axes (columns of ``Q (n, 3, 3)``; ``flip (n,)`` where the
    third is negated to make it right-handed): the rotation-only Procrustes fit of ``U`` onto
    ``Y`` decomposed into the axes' Euler angles. Returns both solutions ``(T, n, 3)`` and
    ``ok (T, n)``."""
    Rm, ok = _rotation_fit(U, Y, w)
    a0, a1 = _euler_solutions(Rm, Q, flip)
    return a0, a1, ok


def _euler_solutions(Rm: Tensor, Q: Tensor, flip: Tensor) -> tuple[Tensor, Tensor]:
    """Rotations ``Rm (..., n, 3, 3)`` (in the joint frame) as both Euler-angle solutions
    ``(..., n, 3)`` about the ball joints' axes (columns of ``Q (n, 3, 3)``, ``flip (n,)``)."""
    ang = tf.matrix_to_euler_xyz(Q.transpose(-1, -2) @ Rm @ Q)
    alt = torch.stack((ang[..., 0] + torch.pi, torch.pi - ang[..., 1], ang[..., 2] + torch.pi), -1)
    sign = torch.where(flip, -1.0, 1.0).to(ang)[:, None] * torch.tensor([0.0, 0.0, 1.0], dtype=ang.dtype, device=ang.device)
    sign = 1.0 - 2.0 * (sign < 0).to(ang)  # (n, 3): -1 on the third angle of flipped joints
    return ang * sign, alt * sign


def _ball_matrix(kc: "_KindConstants", q: Tensor) -> Tensor:
    """The rotations ``(T, n, 3, 3)`` (child joint frame to parent joint frame) of ball joints
    at coordinates ``q (T, C)``: the inverse of :func:`_euler_solutions`."""
    sign = torch.where(kc.flip, -1.0, 1.0).to(q)[:, None] * torch.tensor([0.0, 0.0, 1.0], dtype=q.dtype, device=q.device)
    sign = 1.0 - 2.0 * (sign < 0).to(q)
    ang = (q[:, kc.cols] * kc.slope + kc.icpt) * sign
    return kc.Q @ tf.euler_xyz_to_matrix(ang) @ kc.Q.transpose(-1, -2)


class _KindConstants(NamedTuple):
    """What :func:`_closed_form_seed` needs of a :class:`_Kind` from the model's joint tensors
    (computed once per solve: :meth:`kinfunc.ik.jacobian.ModelKinematics.derived`). ``n``
    units, ``k`` markers each (padded), ``s`` slots each."""

    bodies: Tensor  # (n,) long
    parents: Tensor  # (n,) long: parent body, ground = B (the identity appended last)
    mkc: Tensor  # (n, k) long: marker indices (padding at 0)
    valid: Tensor  # (n, k): 1 for a real marker
    Rpf: Tensor  # (n, 3, 3): parent-side joint frame orientation
    Rcf: Tensor  # (n, 3, 3): child-side
    slope: Tensor  # (n, s)
    icpt: Tensor  # (n, s)
    cols: Tensor  # (n, s) long: coordinates
    axis: Optional[Tensor] = None  # hinges: (n, 3) unit axis of the varying slot
    pre: Optional[Tensor] = None  # hinges: (n, 3, 3) constant slot rotations before it
    post: Optional[Tensor] = None  # ... and after it
    Q: Optional[Tensor] = None  # balls: (n, 3, 3) the axes as columns (third negated where flip)
    flip: Optional[Tensor] = None  # balls: (n,) bool
    orth: Optional[Tensor] = None  # balls: (n,) bool: axes orthonormal (else no closed form)
    skewed: tuple = ()  # balls: top bodies whose axes are not orthonormal


def _kind_constants(kin: ModelKinematics, kind: _Kind, v0: Tensor) -> _KindConstants:
    """The model-only tensors of a closed-form kind (``kin``: the model's kinematics, ``v0 (B,
    6)``: constant slot values), selected from the model's joint frames."""
    model = kin.model
    topo = model.topology
    dev, dt = model.device, model.dtype
    n = len(kind.bodies)
    lt = lambda x: torch.tensor(x, dtype=torch.long, device=dev)  # noqa: E731
    bi = lt(kind.bodies)
    mk = lt(kind.markers)
    axes = kin.frames.axes.index_select(0, bi)[:, :3]  # (n, 3, 3) unit axes
    slope, icpt = linear_params(model, [r for ps in kind.params for r in ps])
    base = dict(
        bodies=bi,
        parents=lt([topo.parents[b] if topo.parents[b] >= 0 else topo.n_bodies for b in kind.bodies]),
        mkc=mk.clamp_min(0),
        valid=(mk >= 0).to(dt),
        Rpf=kin.frames.Rp.index_select(0, bi),
        Rcf=kin.frames.Rc.index_select(0, bi),
        slope=slope.reshape(n, -1),
        icpt=icpt.reshape(n, -1),
        cols=lt(kind.cols),
    )
    if len(kind.slots[0]) == 1:  # hinges: the constant slot rotations before and after the varying one
        ks = [sl[0] for sl in kind.slots]
        Rs = _rodrigues(axes, v0.index_select(0, bi)[:, :3]).reshape(n * 3, 3, 3)
        X = torch.cat((Rs, torch.eye(3, dtype=dt, device=dev)[None]), 0)  # row n * 3: the identity
        pad = lambda r: r + [n * 3] * (2 - len(r))  # noqa: E731
        pre = lt([pad([u * 3 + j for j in range(k)]) for u, k in enumerate(ks)])
        post = lt([pad([u * 3 + j for j in range(k + 1, 3)]) for u, k in enumerate(ks)])
        axis = axes.reshape(n * 3, 3).index_select(0, lt([u * 3 + k for u, k in enumerate(ks)]))
        return _KindConstants(**base, axis=axis, pre=X[pre[:, 0]] @ X[pre[:, 1]], post=X[post[:, 0]] @ X[post[:, 1]])
    Q = axes.transpose(-1, -2)  # columns = the axes
    orth = (Q.transpose(-1, -2) @ Q - torch.eye(3, dtype=dt, device=dev)).abs().amax((-1, -2)) < 1e-6
    flip = torch.linalg.det(Q) < 0
    Q = torch.cat((Q[..., :2], torch.where(flip[:, None, None], -Q[..., 2:], Q[..., 2:])), -1)
    skewed = tuple(b for b, o in zip(kind.bodies, orth.tolist()) if not o)
    return _KindConstants(**base, Q=Q, flip=flip, orth=orth, skewed=skewed)


def _closed_form_seed(
    kin: ModelKinematics, plan: JacobianPlan, consts, stage: _Stage, q: Tensor, X: Tensor, w: Tensor, v0: Tensor, lo: Tensor,
    hi: Tensor, w_all: Optional[Tensor] = None,
) -> tuple[Tensor, list]:
    """``q (T, C)`` with each unit's top joint set in closed form where the joint has one and the
    frame enough of the unit's markers (all hinges of the stage in one batch, all balls in
    another), and the units this did not place completely.

    The unit's markers are expressed about the joint centre in the top joint's child frame at
    the current ``q`` (exact when no other joint of the unit moves), the measured ones about
    the centre's world position (fixed by the parent, already placed) in the parent joint
    frame. ``lo``/``hi (C,)``: bounds; of a ball's two Euler solutions the one nearer its range
    wins. ``w_all (T, M)``: the weights of every marker; with it, a ball placed by one marker
    (or by points on a line through its centre) takes its twist from the markers of the
    joints below it (:func:`_with_children`). ``kin``: the model's kinematics. Returns the new
    ``q``, the units left open and whether a fit with the children replaced any frame's ball."""
    model = kin.model
    topo = model.topology
    hinge, ball, left = _closed_form_units(topo, stage)
    left = list(left)
    used = False
    if hinge is None and ball is None:
        return q, left, used
    fwd = plan.evaluate(model, consts, q, jacobian=False)
    H, p = fwd.H, fwd.p  # (T, B, 3, 4), (T, M, 3)
    T = q.shape[0]
    dev, dt = q.device, q.dtype
    s_body = model.global_scale * model.body_scales
    R_all = torch.cat((H[..., :3], torch.eye(3, dtype=dt, device=dev).expand(T, 1, 3, 3)), 1)  # ground last
    out = q
    for kind in (hinge, ball):
        if kind is None:
            continue
        kc = kin.derived(kind, lambda k: _kind_constants(k, kind, v0))
        cols = kc.cols
        R_b, t_b = H[:, kc.bodies, :, :3], H[:, kc.bodies, :, 3]  # (T, n, 3, 3), (T, n, 3)
        loc_c = model.child_location[kc.bodies] * s_body[kc.bodies]  # (n, 3): the joint centre in the body's frame
        centre = (R_b @ loc_c[None, :, :, None])[..., 0] + t_b
        # world = R_pa Rpf M Rcf^T (P - loc_c) + centre
        U = ((p[:, kc.mkc] - t_b[:, :, None]) @ R_b - loc_c[None, :, None]) @ kc.Rcf
        Y = (X[:, kc.mkc] - centre[:, :, None]) @ (R_all[:, kc.parents] @ kc.Rpf)
        wk = (w[:, kc.mkc] > 0).to(dt) * kc.valid
        if kind is hinge:
            ang = _hinge_angles(U, Y, wk, kc.axis, kc.pre, kc.post)[..., None]
            cands, ok = [(ang - kc.icpt) / kc.slope], wk.sum(-1) > 0
        else:
            a0, a1, ok = _ball_angles(U, Y, wk, kc.Q, kc.flip)
            below = _ball_children(topo, stage)
            if below is not None and w_all is not None:
                a0, a1, ok, used = _with_children(model, plan, consts, kc, below, q, X, w_all, U, Y, wk, centre, R_all, lo, hi, a0, a1, ok)
            cands = [(a0 - kc.icpt) / kc.slope, (a1 - kc.icpt) / kc.slope]
            ok = ok & kc.orth
            if kc.skewed:
                left += [u for u in stage.units if u.top in kc.skewed]
        lo_c, hi_c = lo[cols], hi[cols]  # (n, s)
        best = best_v = None
        for c in cands:
            z = _wrap_to_range(c, lo_c, hi_c, clamp=False)
            v = ((lo_c - z).clamp_min(0) + (z - hi_c).clamp_min(0)).sum(-1)
            if best is None:
                best, best_v = z, v
            else:
                better = v < best_v - 1e-9
                best = torch.where(better[..., None], z, best)
                best_v = torch.where(better, v, best_v)
        flat = cols.reshape(-1)
        cur = out.index_select(1, flat).reshape(T, *cols.shape)
        out = out.index_copy(1, flat, torch.where(ok[..., None], best, cur).reshape(T, -1))
    return out, left, used


def _with_children(
    model: Model, plan: JacobianPlan, consts, kc: _KindConstants, below, q: Tensor, X: Tensor, w_all: Tensor,
    U: Tensor, Y: Tensor, wk: Tensor, centre: Tensor, R_all: Tensor, lo: Tensor, hi: Tensor, a0: Tensor, a1: Tensor,
    ok: Tensor, n_grid: int = 24, prior: float = 0.05, line: float = 0.01,
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Ball joints whose own markers leave their twist open: one marker (a shoulder placed by its
    elbow keypoint), or points on a line through the joint centre (a trunk's spine and thorax
    keypoints; ``line``: the second eigenvalue of their scatter about the centre under that
    fraction of the first). The twist then shows only through the markers below (the
    forearm's direction when the elbow is bent; the shoulders about the spine). There, the
    ball's rotation is fitted to its markers and those of the units hanging from it
    (``below``, from :func:`_ball_children`) at once: for ``n_grid`` values of the one
    coordinate of a joint below (an elbow, a knee) over its range, the other joints below at
    their current values (the lower markers in the ball's frame by one batched forward pass,
    every frame and value together), the rotation best turning all the points onto their
    measured directions, nudged towards the least rotation of the ball's own markers
    (``prior`` of their weight: a straight limb keeps that twist); the value with the least
    residual wins. Where the ball has no marker of its own in the frame (a missing elbow
    keypoint) but one below (the wrist), the same fit places it: the joint below by the
    distance, the rotation nudged towards the joint's current one (:func:`_ball_matrix`).
    Returns the Euler solutions ``a0, a1 (T, n, 3)`` with those frames and units replaced,
    ``ok (T, n)`` with them set, and whether any was replaced.

    The markers below also move with the joints below that are held at their current values
    (a forearm's pronation under a shoulder fitted over the elbow's angle); where those are far
    off, a straight elbow with a twisted humerus can fit them better than the true pose, which
    is why :func:`segment_start` also runs the sweep without this fit and keeps, per frame, the
    start with the lower cost."""
    dt = q.dtype
    cols_c = torch.tensor(below[0], device=q.device)
    mk = torch.tensor(below[1], device=q.device)  # (n, k2)
    mkc, valid = mk.clamp_min(0), (mk >= 0).to(dt)
    G_ = (U * wk[..., None]).transpose(-1, -2) @ U  # (T, n, 3, 3): scatter of the ball's markers about the centre
    tr = G_.diagonal(dim1=-2, dim2=-1).sum(-1)
    minors = sum(G_[..., i, i] * G_[..., j, j] - G_[..., i, j] ** 2 for i, j in ((0, 1), (0, 2), (1, 2)))
    open_ = (minors <= line * tr * tr) & (valid.sum(-1) > 0)  # (T, n): one point, or a line (or none)
    fr = torch.nonzero(open_.any(-1)).flatten()
    if fr.numel() == 0:
        return a0, a1, ok, False
    T1, n = fr.numel(), cols_c.numel()
    has = cols_c >= 0
    qf = q.index_select(0, fr)
    # the markers below, in the balls' top-body frames, depend only on the coordinates below
    # (all at their start values in a first sweep): one grid per distinct set of those values
    grid_cols = set(below[0])
    key = [c for c in below[2] if c not in grid_cols]
    if key:
        _, inv = torch.unique(qf[:, key], dim=0, return_inverse=True)
    else:
        inv = torch.zeros(T1, dtype=torch.long, device=q.device)
    n_u = int(inv.max()) + 1
    first = torch.full((n_u,), T1, dtype=torch.long, device=q.device).scatter_reduce(
        0, inv, torch.arange(T1, device=q.device), reduce="amin"
    )
    qu = qf.index_select(0, first)  # (Tu, C): one frame per distinct set
    Tu = n_u
    if bool(has.any()):
        cc = cols_c[has]
        a = torch.where(torch.isfinite(lo[cc]), lo[cc], torch.full_like(lo[cc], -torch.pi))
        b = torch.where(torch.isfinite(hi[cc]), hi[cc], torch.full_like(hi[cc], torch.pi))
        grid = a + (b - a) * torch.linspace(0.0, 1.0, n_grid, dtype=dt, device=q.device)[:, None]  # (G, n')
        qg = qu.repeat(n_grid, 1).index_copy(1, cc, grid.repeat_interleave(Tu, 0))  # (G Tu, C)
    else:
        n_grid, qg = 1, qu
    kin = plan.evaluate(model, consts, qg, jacobian=False)
    s_body = model.global_scale * model.body_scales
    R_b, t_b = kin.H[:, kc.bodies, :, :3], kin.H[:, kc.bodies, :, 3]  # (G T1, n, 3, 3), (G T1, n, 3)
    loc_c = model.child_location[kc.bodies] * s_body[kc.bodies]
    U2 = ((kin.p[:, mkc] - t_b[:, :, None]) @ R_b - loc_c[None, :, None]) @ kc.Rcf  # (G T1, n, k2, 3)
    U2 = U2.reshape(n_grid, Tu, n, -1, 3).index_select(1, inv)  # (G, T1, n, k2, 3)
    Rf = R_all.index_select(0, fr)
    Y2 = (X.index_select(0, fr)[:, mkc] - centre.index_select(0, fr)[:, :, None]) @ (Rf[:, kc.parents] @ kc.Rpf)
    w2 = (w_all.index_select(0, fr)[:, mkc] > 0).to(dt) * valid  # (T1, n, k2)
    U1, Y1, w1 = U.index_select(0, fr), Y.index_select(0, fr), wk.index_select(0, fr)
    # the prior: the least rotation of the ball's own markers, or where it has none in the frame
    # the joint's current rotation (a shoulder placed by its wrist alone: the least turn from it)
    R0, own = _rotation_fit(U1, Y1, w1)
    R0 = torch.where(own[..., None, None], R0, _ball_matrix(kc, qf))
    Uc = torch.cat((U1.expand(n_grid, *U1.shape), U2), -2)  # (G, T1, n, k + k2, 3)
    Yc = torch.cat((Y1, Y2), -2).expand(n_grid, -1, -1, -1, -1)
    wc = torch.cat((w1, w2), -1).expand(n_grid, -1, -1, -1)
    size = lambda u, y, w_: (w_ * torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(y, dim=-1)).sum(-1)  # noqa: E731
    scale = torch.where(own, size(U1, Y1, w1), size(U2[0], Y2, w2))  # (T1, n)
    Hc = (Uc * wc[..., None]).transpose(-1, -2) @ Yc + (prior * scale)[..., None, None] * R0.transpose(-1, -2)
    Rm = procrustes_rotation(Hc)  # (G, T1, n, 3, 3)
    r = (((Uc @ Rm.transpose(-1, -2)) - Yc).square().sum(-1) * wc).sum(-1)  # (G, T1, n)
    best = r.argmin(0)  # (T1, n)
    Rb = torch.gather(Rm, 0, best[None, ..., None, None].expand(1, T1, n, 3, 3))[0]
    b0, b1 = _euler_solutions(Rb, kc.Q, kc.flip)
    use = (open_.index_select(0, fr) & (w2.sum(-1) > 0))[..., None]
    a0 = a0.index_copy(0, fr, torch.where(use, b0, a0.index_select(0, fr)))
    a1 = a1.index_copy(0, fr, torch.where(use, b1, a1.index_select(0, fr)))
    return a0, a1, ok.index_copy(0, fr, ok.index_select(0, fr) | use[..., 0]), bool(use.any())


def _grid_seed(
    model: Model, plan: JacobianPlan, consts, units: list, q: Tensor, X: Tensor, w: Tensor, lo: Tensor, hi: Tensor, n: int
) -> Tensor:
    """For units with one free coordinate and no closed form (a knee whose rotations and
    translations all follow its angle): the best of ``n`` values spread over the coordinate's
    range (or a whole turn), per frame, from one batched forward pass."""
    one = [u for u in units if len(u.columns) == 1]
    if not one:
        return q
    T = q.shape[0]
    ci = torch.tensor([u.columns[0] for u in one], device=q.device)
    a = torch.where(torch.isfinite(lo[ci]), lo[ci], torch.full_like(lo[ci], -torch.pi))
    b = torch.where(torch.isfinite(hi[ci]), hi[ci], torch.full_like(hi[ci], torch.pi))
    grid = a + (b - a) * torch.linspace(0.0, 1.0, n, dtype=q.dtype, device=q.device)[:, None]  # (n, k)
    qg = q.repeat(n, 1).index_copy(1, ci, grid.repeat_interleave(T, 0))  # (n T, C)
    p = plan.evaluate(model, consts, qg, jacobian=False).p.reshape(n, T, -1, 3)
    r2 = ((p - X) ** 2).sum(-1) * (w * w)  # (n, T, M)
    for k, u in enumerate(one):
        cost = r2[:, :, list(u.markers)].sum(-1)  # (n, T)
        best = grid[:, k].index_select(0, cost.argmin(0))
        q = q.index_copy(1, ci[k : k + 1], best[:, None])
    return q


def _wrap_to_range(z: Tensor, lo: Tensor, hi: Tensor, clamp: bool = True) -> Tensor:
    """Angles moved by whole turns as near the middle of ``[lo, hi]`` as they go (0 for an
    open range), then clamped into it (with ``clamp``)."""
    two_pi = 2.0 * torch.pi
    mid = torch.where(torch.isfinite(lo) & torch.isfinite(hi), 0.5 * (lo + hi), torch.zeros_like(lo))
    wrapped = z - two_pi * torch.round((z - mid) / two_pi)
    return torch.clamp(wrapped, lo, hi) if clamp else wrapped


def _stage_lm(plan, model, consts, q: Tensor, cols: Tensor, targets: MarkerTargets, lo, hi, iters: int, rtol: float = 1e-2):
    """Levenberg-Marquardt over ``q[:, cols]`` only (other coordinates fixed per frame), every
    frame its own problem, until every frame's last accepted step gained less than ``rtol`` of
    its cost (a start needs no more); returns ``(q (T, C), cost (T,))``."""
    T = q.shape[0]
    cost, A, g, _ = plan.normal_equations(model, consts, q, targets)
    mu = torch.full((T,), 1e-3, dtype=q.dtype, device=q.device)
    active = torch.ones(T, dtype=torch.bool, device=q.device)  # a settled frame stops (as it would alone)
    for _ in range(iters):
        z = q.index_select(1, cols)
        held = ((z <= lo) & (g > 0)) | ((z >= hi) & (g < 0))
        dz, _ = _damped_step(A, g, held, mu)
        zn = torch.clamp(z + dz, lo, hi)
        qn = q.index_copy(1, cols, zn)
        cn, An, gn, _ = plan.normal_equations(model, consts, qn, targets)
        acc = (cn < cost) & active
        active = active & ~torch.where(acc, (cost - cn) <= rtol * cost, mu > 1e2)
        q = torch.where(acc[:, None], qn, q)
        cost = torch.where(acc, cn, cost)
        if not bool(active.any()):
            break
        A = torch.where(acc[:, None, None], An, A)
        g = torch.where(acc[:, None], gn, g)
        mu = torch.where(acc, (mu / 3.0).clamp_min(1e-9), mu * 4.0)
    return q, cost


def segment_start(
    model: Model,
    X: Tensor,
    present: Tensor,
    q0: Tensor,
    lo: Tensor,
    hi: Tensor,
    sqrt_w: Tensor | None = None,
    options: Optional[StartOptions] = None,
    kinematics: Optional[ModelKinematics] = None,
) -> Tensor:
    """Starting coordinates ``(T, C)`` from the segment sweep (module docstring).

    ``X (T, M, 3)`` metres (``model.marker_names`` order, any value where missing), ``present
    (T, M)`` 0/1 (or a weight), ``q0 (C,)`` defaults (and the values of locked coordinates),
    ``lo``/``hi (C,)`` the bounds the solve will enforce (``-inf``/``inf`` for none),
    ``sqrt_w (M,)`` square roots of the marker weights (default 1). ``kinematics``: ``model``'s
    :class:`~kinfunc.ik.jacobian.ModelKinematics` when the caller has one (a solve: the model's
    constants are then computed once for the start and the solver), else made here.
    """
    options = options or StartOptions()
    if kinematics is None:
        kinematics = ModelKinematics(model)
    elif kinematics.model is not model:
        raise ValueError("segment_start: kinematics were prepared for another model")
    sw = present if sqrt_w is None else present * sqrt_w
    q = _root_start(model, X, present, q0, kinematics)
    topo = model.topology
    if not _stages(topo):
        return q
    # one plan without Jacobian columns places every stage (forward passes only); a stage refined
    # by LM builds its own
    plan = kinematics.plan(())
    fwd = (plan, plan.constants(model, kinematics))

    def sweeps(q: Tensor, options: StartOptions) -> tuple[Tensor, bool]:
        used = False
        if _coupled_stages(topo):
            # a marked body moved by coordinates a later stage sets (the shoulder girdle rising
            # with the arm): a first sweep finds them, the second places the earlier stages with them
            q, used = _sweep(kinematics, fwd, q, X, sw, lo, hi, options)
        q, used2 = _sweep(kinematics, fwd, q, X, sw, lo, hi, options)
        return q, used or used2

    q1, used = sweeps(q, options)
    if not used:
        return q1
    q2, _ = sweeps(q, dataclasses.replace(options, children=False))
    c1, c2 = (_start_cost(fwd, model, qq, X, sw, lo, hi) for qq in (q1, q2))
    return torch.where((c2 < c1)[:, None], q2, q1)


def _start_cost(fwd: tuple, model: Model, q: Tensor, X: Tensor, sw: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Per-frame cost ``(T,)`` of starting coordinates ``q (T, C)``: the weighted squared marker
    distances (m^2) plus, per radian (or metre) outside the bounds squared, as much as 0.1 m on
    every present marker (a start outside the bounds sits on the solver's limit penalty)."""
    plan, consts = fwd
    p = plan.evaluate(model, consts, q, jacobian=False).p
    sse = ((p - X).square().sum(-1) * sw.square()).sum(-1)
    out = ((lo - q).clamp_min(0) + (q - hi).clamp_min(0)).square().sum(-1)
    return sse + 0.01 * sw.square().sum(-1) * out


@functools.lru_cache(maxsize=32)
def _coupled_stages(topo: Topology) -> bool:
    """Some stage's markers move with coordinates that only a later stage sets in closed form
    (the girdle's translation follows the shoulder's angles, set with the humerus): static."""
    stages = _stages(topo)
    for i, st in enumerate(stages):
        set_here = {c for u in st.units for c in u.top_columns}
        later = {c for s_ in stages[i + 1:] for u in s_.units for c in u.top_columns}
        if (set(st.columns) - set_here) & later:
            return True
    return False


def _sweep(
    kin: ModelKinematics, fwd: tuple, q: Tensor, X: Tensor, sw: Tensor, lo: Tensor, hi: Tensor, options: StartOptions
) -> Tensor:
    """The joints below the root of ``q (T, C)`` placed level by level (:func:`segment_start`;
    ``kin``: the model's kinematics; ``fwd``: a plan and its constants for the forward passes;
    ``sw (T, M)``: the markers' square-root weights, 0 where missing). Returns ``q`` and whether
    a ball took its twist from the markers below (:func:`_with_children`) in any frame."""
    model = kin.model
    topo = model.topology
    stages = _stages(topo)
    plan, consts = fwd
    used = False
    # (B, 6): the values of slots driven by constant functions (a hinge's fixed neighbours), model order
    v0 = consts.v_const[:, 0].reshape(-1, 6)
    v0 = v0 if plan.order_inv is None else v0.index_select(0, plan.order_inv)
    for st in stages:
        cols = torch.tensor(st.columns, device=q.device)
        mask = torch.zeros(topo.n_markers, dtype=q.dtype, device=q.device)
        mask[list(st.markers)] = 1.0
        w = sw * mask
        if not bool((w > 0).any()):
            continue
        lo_c, hi_c = lo.index_select(0, cols), hi.index_select(0, cols)
        seed, left, u = _closed_form_seed(kin, plan, consts, st, q, X, w, v0, lo, hi, sw if options.children else None)
        used = used or u
        q = seed.index_copy(1, cols, _wrap_to_range(seed.index_select(1, cols), lo_c, hi_c))
        if left:  # units without a closed form: a 1-D search where they have one coordinate
            q = _grid_seed(model, plan, consts, left, q, X, w, lo, hi, options.grid)
        if left or options.refine:  # then a few LM steps on this stage
            sp = kin.plan(st.columns)
            q, _ = _stage_lm(sp, model, sp.constants(model, kin), q, cols, MarkerTargets.of(X, w), lo_c, hi_c, options.iterations)
    return q, used


def _root_on_a_line(model: Model, tol: float = 0.05) -> bool:
    """The root's markers (three or more) lie on a line through their centroid (a keypoint set's
    two hips and their midpoint): their rigid fit leaves the rotation about it open. ``tol``:
    the second singular value of their spread under that fraction of the first."""
    root = [i for i, b in enumerate(model.topology.marker_bodies) if b == 0]
    if len(root) < 3:
        return False
    P = model.marker_offsets[root].to(torch.float64)
    s = torch.linalg.svdvals(P - P.mean(0))
    return bool(s[1] <= tol * s[0])


def _root_start(model: Model, X: Tensor, present: Tensor, q0: Tensor, kin: Optional[ModelKinematics] = None) -> Tensor:
    """:func:`kinfunc.ik.init.initial_q`, except for a root whose markers lie on a line: its
    pose then comes, as for a root with fewer than three markers, from every marker's
    template with the root's own weighing most (the trunk settles the rotation they leave
    open), in the frames with three markers or more."""
    q = initial_q(model, X, present, q0, kin)
    if not _root_on_a_line(model):
        return q
    poses = fk(model, q0)
    P = (marker_positions(model, q0, poses) - poses.t[0]) @ poses.R[0]
    R, t, ok = _robust_template_fit(P, X, present, [b == 0 for b in model.topology.marker_bodies])
    return torch.where(ok[:, None], root_coordinates(model, R, t, q0, kin), q)


def _min_plus(X: Tensor, Y: Tensor) -> Tensor:
    """``(X (x) Y)[k, j] = min_m X[k, m] + Y[m, j]`` over the last two axes."""
    return (X[..., :, :, None] + Y[..., None, :, :]).amin(-2)


def _least_change(cand: Tensor, feas: Tensor, pen: Tensor, turns: Tensor, new_trial: Tensor) -> Tensor:
    """Dynamic programming over frames, in ``log2(T)`` batched steps (no loop over frames): per
    group ``g`` and frame ``t`` one of two candidates ``cand (G, T, 2, 3)`` (allowed where
    ``feas (G, T, 2)``, priced ``pen (G, T, 2)``), chosen to minimise the summed change between
    consecutive frames (angles compared modulo ``turns (G, 3)``); ``new_trial (T - 1,)`` bool
    marks frames that start a trial (no change counted into them). Returns ``(G, T)`` long.

    The forward costs are a prefix product of the per-frame transition matrices in the
    (min, +) semiring and the choices a suffix composition of the per-frame "best previous"
    maps, both by Hillis-Steele scans."""
    G, T = feas.shape[:2]
    inf = torch.tensor(float("inf"), dtype=cand.dtype)
    if T == 1:
        return torch.where(feas[:, 0], pen[:, 0], inf).argmin(-1)[:, None]
    dif = cand[:, 1:, :, None, :] - cand[:, :-1, None, :, :]  # (G, T-1, 2 now, 2 before, 3)
    tw = turns[:, None, None, None, :]
    step = (dif - tw * torch.round(dif / tw)).abs().sum(-1)
    step = torch.where(new_trial[None, :, None, None], torch.zeros_like(step), step)
    A = torch.where(feas[:, 1:, :, None], step + pen[:, 1:, :, None], inf)  # (G, T-1, 2, 2)
    c0 = torch.where(feas[:, 0], pen[:, 0], inf)  # (G, 2)
    P = A.clone()
    s_ = 1
    while s_ < T - 1:  # P[t] = A[t] (x) A[t-1] (x) ... (x) A[0]
        P = torch.cat((P[:, :s_], _min_plus(P[:, s_:], P[:, :-s_])), 1)
        s_ *= 2
    cost = torch.cat((c0[:, None], (P + c0[:, None, None, :]).amin(-1)), 1)  # (G, T, 2): best cost ending in k
    back = (A + cost[:, :-1, None, :]).argmin(-1)  # (G, T-1, 2): best candidate before, given this one
    F = back.flip(1)  # F[i] = b_{T-1-i}; scan to F[i] = b_{T-1-i} o ... o b_{T-1}
    s_ = 1
    while s_ < T - 1:
        F = torch.cat((F[:, :s_], torch.gather(F[:, s_:], 2, F[:, :-s_])), 1)
        s_ *= 2
    last = cost[:, -1].argmin(-1)  # (G,)
    before = torch.gather(F.flip(1), 2, last[:, None, None].expand(G, T - 1, 1))[..., 0]  # choice at t - 1
    return torch.cat((before, last[:, None]), 1)


def continuous_in_time(model: Model, q: Tensor, lo: Tensor, hi: Tensor, trial_id: Tensor) -> Tensor:
    """The same poses ``q (T, C)`` written so that angles change as little as possible from frame
    to frame within each trial (``trial_id (T,)``): an angle may be shifted by whole turns, and a
    joint with three orthogonal rotation axes may take its other Euler solution ``(a + pi,
    pi - b, c + pi)``; only choices inside ``[lo, hi] (C,)`` count. Body poses and marker
    positions do not change; a smoothness term (and a plot) then sees the motion, not the
    jumps of a representation. Per joint, the choices of all frames are made together by
    dynamic programming (least total change over the trial)."""
    import numpy as np

    topo = model.topology
    groups = []  # (coordinate indices, slopes, intercepts, euler: bool)
    for b in range(topo.n_bodies):
        lin = _linear_slots(model, b)
        rot = sorted(s_ for s_ in lin if s_ < 3)
        if not rot:
            continue
        euler = False
        if rot == [0, 1, 2] and _varying_slots(topo, b) == {0, 1, 2}:
            axes = model.axes[b, :3] / torch.linalg.vector_norm(model.axes[b, :3], dim=-1, keepdim=True)
            euler = float((axes @ axes.T - torch.eye(3, dtype=axes.dtype, device=axes.device)).abs().max()) < 1e-6
        cols = np.array([lin[s_][0] for s_ in rot])
        groups.append((cols, np.array([float(lin[s_][1]) for s_ in rot]), np.array([float(lin[s_][2]) for s_ in rot]), euler))
    if not groups or q.shape[0] < 2:
        return q
    Q = q.detach().cpu().double().numpy().copy()
    lo_n, hi_n = lo.detach().cpu().double().numpy(), hi.detach().cpu().double().numpy()
    tid = trial_id.detach().cpu().numpy()
    T, G = Q.shape[0], len(groups)
    free_turn = lambda c, turn: (hi_n[c] - lo_n[c]) >= turn - 1e-4  # noqa: E731  (open or a whole turn)
    # each group's one or two solutions, every angle as near the middle of its range as it goes
    cand = np.zeros((G, T, 2, 3))
    feas = np.zeros((G, T, 2), dtype=bool)
    pen = np.zeros((G, T, 2))  # a small price on the solution whose middle angle is beyond +-90 deg
    turns = np.ones((G, 3))
    for g, (cols, sl, ic, euler) in enumerate(groups):
        n = len(cols)
        turn = 2 * np.pi / np.abs(sl)
        turns[g, :n] = turn
        fin = np.isfinite(lo_n[cols]) & np.isfinite(hi_n[cols])
        mid = np.where(fin, 0.5 * (np.where(fin, lo_n[cols], 0.0) + np.where(fin, hi_n[cols], 0.0)), 0.0)
        base = [Q[:, cols]]
        if euler:
            a = Q[:, cols] * sl + ic
            base.append((np.stack((a[:, 0] + np.pi, np.pi - a[:, 1], a[:, 2] + np.pi), 1) - ic) / sl)
        for k, b_ in enumerate(base):
            c = b_ - turn * np.round((b_ - mid) / turn)
            cand[g, :, k, :n] = c
            if euler:
                mid_angle = np.remainder(c[:, 1] * sl[1] + ic[1] + np.pi, 2 * np.pi) - np.pi
                pen[g, :, k] = 1e-3 * (np.abs(mid_angle) > 0.5 * np.pi)
            feas[g, :, k] = np.all(free_turn(cols, turn) | ((c >= lo_n[cols] - 1e-9) & (c <= hi_n[cols] + 1e-9)), -1)
        feas[g, :, 0] = True  # the solver's own solution (inside its range) stays allowed
    new_trial = tid[1:] != tid[:-1]
    choice = _least_change(
        torch.as_tensor(cand), torch.as_tensor(feas), torch.as_tensor(pen), torch.as_tensor(turns),
        torch.as_tensor(new_trial),
    ).numpy()
    # whole turns undone where the range allows them: each frame = its trial's first frame plus
    # the summed wrapped steps since then
    first = np.maximum.accumulate(np.where(np.r_[True, new_trial], np.arange(T), 0))  # (T,)
    for g, (cols, _, _, _) in enumerate(groups):
        n = len(cols)
        v = cand[g, np.arange(T), choice[g], :n]  # (T, n)
        tw = turns[g, :n]
        dv = np.diff(v, axis=0)
        dv = np.where(new_trial[:, None], 0.0, dv - tw * np.round(dv / tw))
        S = np.vstack((np.zeros((1, n)), np.cumsum(dv, 0)))
        unwrapped = v[first] + S - S[first]
        Q[:, cols] = np.where(free_turn(cols, tw)[None], unwrapped, v)
    return torch.as_tensor(Q, dtype=q.dtype, device=q.device)
