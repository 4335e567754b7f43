"""A deliberately plain forward-kinematics reference: one body at a time, 4x4 matrices,
rotations by matrix exponential, Euler frames from elementary rotations. Slow and obvious."""
from __future__ import annotations

import torch

from kinfunc import functions as F
from kinfunc.transforms import skew


def _slot_fns(groups, params):
    """{output index: (key, per-function params, input index)} from grouped storage."""
    out = {}
    for g, p in zip(groups, params):
        for i, (o, inp) in enumerate(zip(g.outputs, g.inputs)):
            out[o] = (g.key, tuple(t[i : i + 1] for t in p), inp)
    return out


def _eval(entry, full_q):
    key, p, inp = entry
    u = full_q[inp : inp + 1] if key[0] is not F.FnKind.CONSTANT else torch.zeros(1, dtype=full_q.dtype)
    return F.evaluate(key, p, u[None])[0, 0]


def _rot(axis: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Rotation about a unit axis (Rodrigues; torch.linalg.matrix_exp is only ~1e-10 accurate)."""
    K = skew(axis)
    return torch.eye(3, dtype=a.dtype) + torch.sin(a) * K + (1 - torch.cos(a)) * (K @ K)


def _elem(axis: int, a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rows = {
        0: [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        1: [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        2: [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return torch.stack([torch.stack(r) for r in rows])


def _H(R, t):
    H = torch.eye(4, dtype=R.dtype)
    H[:3, :3] = R
    H[:3, 3] = t
    return H


def naive_fk(model, q: torch.Tensor):
    """World 4x4 transforms ``(B, 4, 4)`` and marker positions ``(M, 3)`` for one ``q (C,)``."""
    topo = model.topology
    full = q
    if topo.dependent_names:
        cpl = _slot_fns(topo.coupler_groups, model.coupler_params)
        dep = torch.stack([_eval(cpl[d], q) for d in range(len(topo.dependent_names))])
        full = torch.cat((q, dep))
    slots = _slot_fns(topo.slot_groups, model.slot_params)
    scale = model.global_scale * model.body_scales
    world = []
    for b, p in enumerate(topo.parents):
        s_par = torch.ones(3, dtype=q.dtype) if p < 0 else scale[p]
        vals = [_eval(slots[b * 6 + k], full) if b * 6 + k in slots else torch.zeros((), dtype=q.dtype) for k in range(6)]
        R = torch.eye(3, dtype=q.dtype)
        for k in range(3):
            a = model.axes[b, k] / model.axes[b, k].norm()
            R = R @ _rot(a, vals[k])
        t = torch.zeros(3, dtype=q.dtype)
        for k in range(3):
            a = model.axes[b, 3 + k]
            # OpenSim ScaleTool: |a|-weighted mean of the parent's factors; identity DOFs unscaled
            f = 1.0 if b * 3 + k in topo.unscaled_slots else (a.abs() @ s_par) / a.abs().sum()
            t = t + a / a.norm() * vals[3 + k] * f
        po, co = model.parent_orientation[b], model.child_orientation[b]
        Rp = _elem(0, po[0]) @ _elem(1, po[1]) @ _elem(2, po[2])
        Rc = _elem(0, co[0]) @ _elem(1, co[1]) @ _elem(2, co[2])
        Tp = _H(Rp, model.parent_location[b] * s_par)
        Tc = _H(Rc, model.child_location[b] * scale[b])
        T = Tp @ _H(R, t) @ torch.linalg.inv(Tc)
        world.append(T if p < 0 else world[p] @ T)
    W = torch.stack(world)
    markers = []
    for m, b in enumerate(topo.marker_bodies):
        off = model.marker_offsets[m] * scale[b]
        markers.append(W[b, :3, :3] @ off + W[b, :3, 3])
    return W, torch.stack(markers) if markers else torch.zeros(0, 3, dtype=q.dtype)
