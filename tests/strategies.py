"""Hypothesis strategies: random kinematic trees, joint specs, poses and scales."""
from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

import kinfunc as kf
from kinfunc import functions as F

finite = dict(allow_nan=False, allow_infinity=False)


def unit_axis():
    # components are either exactly 0 or clearly away from it: translation scaling weighs
    # axis components by |a| (OpenSim's rule), which has a kink at 0 that central
    # differences must not straddle
    comp = st.floats(-1, 1, **finite).map(lambda x: 0.0 if abs(x) < 1e-3 else x)
    return st.tuples(comp, comp, comp).filter(lambda a: sum(x * x for x in a) > 0.05)


def vec3(lo=-0.3, hi=0.3):
    return st.tuples(*[st.floats(lo, hi, **finite)] * 3)


@st.composite
def function_spec(draw, allow_spline=True):
    kind = draw(st.sampled_from(["linear", "polynomial", "spline"] if allow_spline else ["linear", "polynomial"]))
    if kind == "linear":
        return F.Linear(draw(st.floats(-2, 2, **finite)), draw(st.floats(-0.3, 0.3, **finite)))
    if kind == "polynomial":
        n = draw(st.integers(1, 4))
        return F.Polynomial(tuple(draw(st.floats(-0.5, 0.5, **finite)) for _ in range(n)))
    k = draw(st.integers(2, 7))
    gaps = [draw(st.floats(0.2, 0.8, **finite)) for _ in range(k - 1)]
    x = [-1.5]
    for g in gaps:
        x.append(x[-1] + g)
    y = [draw(st.floats(-0.3, 0.3, **finite)) for _ in range(k)]
    return F.Spline(tuple(x), tuple(y), draw(st.sampled_from(list(F.SplineEnd))))


@st.composite
def dof(draw, coords, translation):
    axis = draw(unit_axis())
    roll = draw(st.integers(0, 9))
    if roll == 0:
        c = draw(st.floats(-0.2, 0.2, **finite))
        return kf.Dof(axis, None, F.Constant(c))
    coord = draw(st.sampled_from(coords))
    fn = F.Linear() if roll < 5 else draw(function_spec())
    return kf.Dof(axis, coord, fn)


@st.composite
def random_model(draw, max_bodies=5, couplers=True):
    """A random tree: 1..max_bodies bodies, custom joints with 0-3 rotations and 0-3
    translations driven by random functions of shared coordinates, optional couplers, markers."""
    nb = draw(st.integers(1, max_bodies))
    n_coords = draw(st.integers(1, 6))
    coords = [f"q{i}" for i in range(n_coords)]
    use_coupler = couplers and draw(st.booleans()) and n_coords >= 2
    mb = kf.ModelBuilder("random")
    for b in range(nb):
        parent = "ground" if b == 0 else f"b{draw(st.integers(0, b - 1))}"
        rots = tuple(draw(dof(coords, False)) for _ in range(draw(st.integers(0, 3))))
        trans = tuple(draw(dof(coords, True)) for _ in range(draw(st.integers(0, 3))))
        mb.add_body(
            f"b{b}",
            kf.Joint(
                f"j{b}",
                parent,
                draw(vec3()),
                draw(vec3(-math.pi, math.pi)),
                draw(vec3()),
                draw(vec3(-math.pi, math.pi)),
                rots,
                trans,
            ),
        )
    if use_coupler:
        mb.add_coupler(coords[-1], coords[0], draw(function_spec()))
    for m in range(draw(st.integers(1, 5))):
        mb.add_marker(f"m{m}", f"b{draw(st.integers(0, nb - 1))}", draw(vec3()))
    model = mb.build(dtype=torch.float64)
    # random non-unit scales so scaling paths are exercised
    scales = torch.tensor(draw(st.lists(st.floats(0.7, 1.3, **finite), min_size=3 * nb, max_size=3 * nb)), dtype=torch.float64)
    g = draw(st.floats(0.8, 1.2, **finite))
    return model.replace(body_scales=scales.reshape(nb, 3), global_scale=torch.tensor(g, dtype=torch.float64))


@st.composite
def model_and_q(draw, batch=(), **kw):
    model = draw(random_model(**kw))
    C = len(model.coordinate_names)
    n = int(torch.Size(batch).numel()) * C
    vals = draw(st.lists(st.floats(-1.5, 1.5, **finite), min_size=n, max_size=n))
    q = torch.tensor(vals, dtype=torch.float64).reshape(*batch, C)
    return model, q
