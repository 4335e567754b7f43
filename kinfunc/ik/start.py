"""A starting pose for IK that does not depend on the motion: a segment-by-segment sweep.

The old start (root from a rigid fit, every other coordinate at its default) only works near
the default pose: a deep squat, a kick or a body lying on the floor starts GN in the wrong basin.
Here the tree is walked from the root down, and every segment is placed from its own markers:

1. the root body from a weighted rigid (Kabsch) fit of its markers (:mod:`kinfunc.ik.init`);
2. then, level by level, each joint from the markers of its child body. A *unit* is a joint
   whose child carries markers, together with the joints of unmarked bodies above it (a talus
   without markers joins the calcaneus below it). For every frame the unit's top body is fitted
   rigidly to its markers plus its joint centre (known from the parent already placed); the
   joint coordinates that produce that rotation are read off in closed form where the joint
   allows it (one rotation axis: the best angle about it; three orthogonal axes: an Euler
   decomposition in the joint's axes). Several seeds per frame (that closed form and the
   coordinates' defaults) are then refined by a small Levenberg-Marquardt over the unit's
   coordinates alone, on the unit's markers alone, all frames and seeds in one batch, and each
   frame keeps its best seed.

Nothing is sequential in time and every step is a batched tensor operation over frames. The
full solve (:mod:`kinfunc.ik.gn`) then starts from this pose; :mod:`kinfunc.ik.repair` restarts
frames that still end far above their neighbours.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import torch
from torch import Tensor

from .. import functions as F
from .. import transforms as tf
from ..fk import slot_values
from ..model import Model, Topology
from .gn import _damped_step
from .init import initial_q
from .jacobian import JacobianPlan, MarkerTargets

__all__ = ["segment_start", "StartOptions"]


@dataclasses.dataclass(frozen=True)
class StartOptions:
    """``iterations``: most LM iterations of a stage refined by LM (those with a joint without a
    closed form; every stage with ``refine``); ``grid``: values tried for a one-coordinate
    joint without a closed form."""

    iterations: int = 10
    refine: bool = False
    grid: int = 12


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
def _stages(topo: Topology) -> tuple[_Stage, ...]:
    """The sweep's stages (static, per topology): units grouped by the depth of their top body."""
    B, C = topo.n_bodies, topo.n_coordinates
    drives: list[set[int]] = [set() for _ in range(B)]
    for g in topo.slot_groups:
        if g.key[0] is F.FnKind.CONSTANT:
            continue
        for o, i in zip(g.outputs, g.inputs):
            drives[o // 6] |= {c for c in _independent_inputs(topo, i) if c < C and not topo.coordinate_locked[c]}
    children: list[list[int]] = [[] for _ in range(B)]
    for b, p in enumerate(topo.parents):
        if p >= 0:
            children[p].append(b)
    marked = [False] * B
    for b in topo.marker_bodies:
        marked[b] = True
    depth = [0] * B
    for b, p in enumerate(topo.parents):
        depth[b] = 0 if p < 0 else depth[p] + 1
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
    topo = model.topology
    out = {}
    for g, params in zip(topo.slot_groups, model.slot_params):
        if g.key[0] is not F.FnKind.LINEAR:
            continue
        slope, icpt = params
        for k, (o, i) in enumerate(zip(g.outputs, g.inputs)):
            if o // 6 == b and o % 6 < 3 and i < topo.n_coordinates and not topo.coordinate_locked[i]:
                out[o % 6] = (i, slope[k], icpt[k])
    return out


def _varying_slots(topo: Topology, b: int) -> set[int]:
    out = set()
    for g in topo.slot_groups:
        if g.key[0] is F.FnKind.CONSTANT:
            continue
        out |= {o % 6 for o in g.outputs if o // 6 == b and o % 6 < 3}
    return out


def _rodrigues(a: Tensor, v: Tensor) -> Tensor:
    """Rotation ``(..., 3, 3)`` about unit axis ``a (3,)`` by ``v (...)``."""
    K = tf.skew(a)
    s, c = torch.sin(v)[..., None, None], torch.cos(v)[..., None, None]
    return torch.eye(3, dtype=a.dtype, device=a.device) + s * K + (1.0 - c) * (K @ K)


def _rotation_fit(U: Tensor, Y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation ``R (T, 3, 3)`` about the origin minimising ``sum_i w_i |R u_i - y_i|^2`` for
    ``U, Y (T, k, 3)``, ``w (T, k)``, and ``ok (T,)``: at least two points with weight (with
    the origin, three points fix a rotation)."""
    H = (U * w[..., None]).transpose(-1, -2) @ Y  # (T, 3, 3) = sum w u y^T
    Us, _, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(V @ Us.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.diag_embed(torch.stack((torch.ones_like(d), torch.ones_like(d), d), -1))
    return V @ D @ Us.transpose(-1, -2), (w > 0).sum(-1) >= 2


def _joint_closed_form(model: Model, b: int, U: Tensor, Y: Tensor, w: Tensor, v: Tensor):
    """Coordinates of body ``b``'s joint that best turn points ``U (T, k, 3)`` (child joint
    frame, about the joint centre) onto ``Y (T, k, 3)`` (parent joint frame, about the centre),
    weights ``w (T, k)``, in closed form; ``None`` when the joint has none. ``v (6,)``: the
    joint's slot values at the defaults (constant slots keep them).

    One varying rotation slot (a hinge, whatever its axis, with constant slots around it): the
    angle maximising ``tr(R_a(angle) K)``, ``K = sum w u y^T`` (one marker off the axis is
    enough). Three varying slots about orthogonal axes: the rotation-only Procrustes fit,
    decomposed into the axes' Euler angles (both solutions: the caller keeps the one inside the
    joint's range). Returns ``(coordinate indices, candidate values [(T, n), ...], ok (T,))``."""
    topo = model.topology
    lin = _linear_slots(model, b)
    vary = _varying_slots(topo, b)
    if not vary or not vary <= set(lin) or len({lin[s][0] for s in vary}) != len(vary):
        return None
    axes = model.axes[b, :3] / torch.linalg.vector_norm(model.axes[b, :3], dim=-1, keepdim=True)
    if len(vary) == 1:
        (k,) = vary
        eye = torch.eye(3, dtype=U.dtype, device=U.device)
        pre, post = eye, eye
        for s in range(3):
            if s != k:
                Rs = _rodrigues(axes[s], v[s])
                pre, post = (pre @ Rs, post) if s < k else (pre, post @ Rs)
        # Y = pre R_a post U  ->  maximise sum w (pre^T y)^T R_a (post u)
        K = ((U @ post.T) * w[..., None]).transpose(-1, -2) @ (Y @ pre)  # (T, 3, 3) = sum w u' y'^T
        a = axes[k]
        skew_tr = (tf.skew(a) * K.transpose(-1, -2)).sum((-1, -2))  # tr([a]x K)
        tr = K.diagonal(dim1=-2, dim2=-1).sum(-1)
        ang = torch.atan2(skew_tr, tr - torch.einsum("i,tij,j->t", a, K, a))[:, None]
        slots = [k]
        ok = (w > 0).any(-1)
        alt = None
    elif len(vary) == 3:
        Q = axes.T
        if float((Q.T @ Q - torch.eye(3, dtype=Q.dtype, device=Q.device)).abs().max()) > 1e-6:
            return None
        flip = float(torch.linalg.det(Q)) < 0
        if flip:
            Q = torch.cat((Q[:, :2], -Q[:, 2:]), 1)
        Rm, ok = _rotation_fit(U, Y, w)
        ang = tf.matrix_to_euler_xyz(Q.T @ Rm @ Q)
        # the other Euler solution of the same rotation: (a + pi, pi - b, c + pi)
        alt = torch.stack((ang[:, 0] + torch.pi, torch.pi - ang[:, 1], ang[:, 2] + torch.pi), -1)
        if flip:
            ang = torch.cat((ang[:, :2], -ang[:, 2:]), 1)
            alt = torch.cat((alt[:, :2], -alt[:, 2:]), 1)
        slots = [0, 1, 2]
    else:
        return None
    cols = [lin[s][0] for s in slots]
    slope = torch.stack([lin[s][1] for s in slots])
    icpt = torch.stack([lin[s][2] for s in slots])
    cands = [(a - icpt) / slope for a in (ang, alt) if a is not None]
    return cols, cands, ok


def _closed_form_seed(
    model: Model, plan: JacobianPlan, consts, stage: _Stage, q: Tensor, X: Tensor, w: Tensor, v0: Tensor, lo: Tensor, hi: Tensor
) -> tuple[Tensor, list]:
    """``q (T, C)`` with each unit's top joint set in closed form (:func:`_joint_closed_form`)
    where the joint has one and the frame enough of the unit's markers, and the units this did
    not place completely (no closed form, or other free joints below the top one).

    The unit's markers are expressed about the joint centre in the top joint's child frame at
    the current ``q`` (exact when no other joint of the unit moves), the measured ones about
    the centre's world position (fixed by the parent, already placed) in the parent joint
    frame. ``lo``/``hi (C,)``: bounds; of two Euler solutions the one nearer the range wins."""
    topo = model.topology
    kin = plan.evaluate(model, consts, q, jacobian=False)
    H, p = kin.H, kin.p  # (T, B, 3, 4), (T, M, 3)
    s_body = model.global_scale * model.body_scales
    out = q
    T = q.shape[0]
    left = []
    eye = torch.eye(3, dtype=q.dtype, device=q.device)
    for u in stage.units:
        b, pa = u.top, topo.parents[u.top]
        R_b, t_b = H[:, b, :, :3], H[:, b, :, 3]
        loc_c = model.child_location[b] * s_body[b]  # the joint centre in b's frame
        centre = (R_b @ loc_c[:, None])[..., 0] + t_b
        mk = torch.tensor(u.markers, device=q.device)
        R_pa = H[:, pa, :, :3] if pa >= 0 else eye.expand(T, 3, 3)
        Rpf = tf.euler_xyz_to_matrix(model.parent_orientation[b])
        Rcf = tf.euler_xyz_to_matrix(model.child_orientation[b])
        # world = R_pa Rpf M Rcf^T (P - loc_c) + centre, P in b's frame
        U = ((p.index_select(1, mk) - t_b[:, None]) @ R_b - loc_c) @ Rcf  # Rcf^T (P - loc_c), as rows
        Y = (X.index_select(1, mk) - centre[:, None]) @ (R_pa @ Rpf)  # (R_pa Rpf)^T (x - centre)
        cf = _joint_closed_form(model, b, U, Y, (w.index_select(1, mk) > 0).to(q.dtype), v0[b])
        if cf is None:
            left.append(u)
            continue
        cols, cands, ok = cf
        if not set(u.columns) <= set(cols):
            left.append(u)
        ci = torch.tensor(cols, device=q.device)
        lo_c, hi_c = lo.index_select(0, ci), hi.index_select(0, ci)
        best, best_v = None, None
        for c in cands:
            z = _wrap_to_range(c, lo_c, hi_c, clamp=False)
            v = (lo_c - z).clamp_min(0).sum(-1) + (z - hi_c).clamp_min(0).sum(-1)
            if best is None:
                best, best_v = z, v
            else:
                better = v < best_v - 1e-9
                best = torch.where(better[:, None], z, best)
                best_v = torch.where(better, v, best_v)
        out = out.index_copy(1, ci, torch.where(ok[:, None], best, out.index_select(1, ci)))
    return out, left


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
) -> Tensor:
    """Starting coordinates ``(T, C)`` from the segment sweep (module docstring).

    ``X (T, M, 3)`` metres (``model.marker_names`` order, any value where missing), ``present
    (T, M)`` 0/1 (or a weight), ``q0 (C,)`` defaults (and the values of locked coordinates),
    ``lo``/``hi (C,)`` the bounds the solve will enforce (``-inf``/``inf`` for none),
    ``sqrt_w (M,)`` square roots of the marker weights (default 1).
    """
    topo = model.topology
    options = options or StartOptions()
    q = initial_q(model, X, present, q0)
    stages = _stages(topo)
    if not stages:
        return q
    sw = present if sqrt_w is None else present * sqrt_w
    v0 = slot_values(model, q0)  # (B, 6): constant slots keep these values
    for st in stages:
        cols = torch.tensor(st.columns, device=q.device)
        mask = torch.zeros(topo.n_markers, dtype=q.dtype, device=q.device)
        mask[list(st.markers)] = 1.0
        w = sw * mask
        if not bool((w > 0).any()):
            continue
        lo_c, hi_c = lo.index_select(0, cols), hi.index_select(0, cols)
        plan = JacobianPlan.build(model, st.columns)
        consts = plan.constants(model)
        seed, left = _closed_form_seed(model, plan, consts, st, q, X, w, v0, lo, hi)
        q = seed.index_copy(1, cols, _wrap_to_range(seed.index_select(1, cols), lo_c, hi_c))
        if left:  # units without a closed form: a 1-D search where they have one coordinate
            q = _grid_seed(model, plan, consts, left, q, X, w, lo, hi, options.grid)
        if left or options.refine:  # then a few LM steps on this stage
            q, _ = _stage_lm(plan, model, consts, q, cols, MarkerTargets.of(X, w), lo_c, hi_c, options.iterations)
    return q


def continuous_in_time(model: Model, q: Tensor, lo: Tensor, hi: Tensor, trial_id: Tensor) -> Tensor:
    """The same poses ``q (T, C)`` written so that angles change as little as possible from frame
    to frame within each trial (``trial_id (T,)``): an angle may be shifted by whole turns, and a
    joint with three orthogonal rotation axes may take its other Euler solution ``(a + pi,
    pi - b, c + pi)``; only choices inside ``[lo, hi] (C,)`` count. Body poses and marker
    positions do not change; a smoothness term (and a plot) then sees the motion, not the
    jumps of a representation. Per joint, the choices of all frames are made together by
    dynamic programming (least total change over the trial)."""
    import itertools

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
    starts = [0] + [t for t in range(1, T) if tid[t] != tid[t - 1]] + [T]
    choice = np.zeros((G, T), dtype=np.int64)
    gi = np.arange(G)
    for s0, s1 in zip(starts[:-1], starts[1:]):  # least total change: dynamic programming over the two solutions
        cost = np.where(feas[:, s0], pen[:, s0], np.inf)  # (G, 2)
        back = np.zeros((G, s1 - s0, 2), dtype=np.int64)
        for t in range(s0 + 1, s1):
            dif = cand[:, t, :, None, :] - cand[:, t - 1, None, :, :]  # (G, 2 now, 2 prev, 3)
            dif = np.abs(dif - turns[:, None, None, :] * np.round(dif / turns[:, None, None, :]))
            d = dif.sum(-1) + cost[:, None, :]
            b_ = d.argmin(2)
            back[:, t - s0] = b_
            cost = np.where(feas[:, t], np.take_along_axis(d, b_[..., None], 2)[..., 0] + pen[:, t], np.inf)
        k = cost.argmin(1)
        for t in range(s1 - 1, s0 - 1, -1):
            choice[:, t] = k
            k = back[gi, t - s0, k]
    for g, (cols, _, _, _) in enumerate(groups):
        n = len(cols)
        v = cand[g, np.arange(T), choice[g], :n]  # (T, n)
        for j, c in enumerate(cols):  # whole turns undone where the range allows them
            if free_turn(c, turns[g, j]):
                for s0, s1 in zip(starts[:-1], starts[1:]):
                    dv = np.diff(v[s0:s1, j])
                    v[s0 + 1 : s1, j] = v[s0, j] + np.cumsum(dv - turns[g, j] * np.round(dv / turns[g, j]))
        Q[:, cols] = v
    return torch.as_tensor(Q, dtype=q.dtype, device=q.device)
