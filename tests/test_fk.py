"""Forward kinematics: equals the naive reference on random trees; broadcasting, vmap,
gradients (jacrev = jacfwd = central differences in float64) wrt q and every model leaf,
compiled equals eager; scaling semantics."""
import math

import pytest
import torch
from hypothesis import given, settings
from torch.func import jacfwd, jacrev, vmap

import kinfunc as kf
from kinfunc._pytree import tree_flatten, tree_unflatten

from .naive import naive_fk
from .strategies import model_and_q

f64 = torch.float64


@given(model_and_q())
def test_fk_equals_naive_reference(mq):
    model, q = mq
    poses = kf.fk(model, q)
    W, markers = naive_fk(model, q)
    torch.testing.assert_close(poses.R, W[:, :3, :3], atol=1e-10, rtol=0)
    torch.testing.assert_close(poses.t, W[:, :3, 3], atol=1e-10, rtol=0)
    torch.testing.assert_close(kf.marker_positions(model, q), markers, atol=1e-10, rtol=0)


@given(model_and_q(batch=(3, 2)))
def test_leading_dims_broadcast_and_vmap_equals_batching(mq):
    model, q = mq
    x = kf.marker_positions(model, q)
    assert x.shape == (3, 2, len(model.marker_names), 3)
    for i in range(3):
        for j in range(2):
            torch.testing.assert_close(x[i, j], kf.marker_positions(model, q[i, j]), atol=1e-12, rtol=0)
    xv = vmap(vmap(lambda qq: kf.marker_positions(model, qq)))(q)
    torch.testing.assert_close(xv, x, atol=1e-12, rtol=0)


def _three_way(fn, x, eps=1e-6, atol=1e-6):
    """jacrev == jacfwd == central finite differences for ``fn: (N,) -> (...)``."""
    Jr = jacrev(fn)(x)
    Jf = jacfwd(fn)(x)
    cols = []
    for k in range(x.numel()):
        e = torch.zeros_like(x)
        e.view(-1)[k] = eps
        cols.append((fn(x + e) - fn(x - e)) / (2 * eps))
    Jd = torch.stack(cols, -1).reshape(Jr.shape)
    torch.testing.assert_close(Jr, Jf, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(Jr, Jd, atol=atol, rtol=1e-5)


@given(model_and_q())
@settings(max_examples=8)
def test_gradients_wrt_q_and_every_model_leaf(mq):
    model, q = mq
    if q.numel():
        _three_way(lambda qq: kf.marker_positions(model, qq), q)
        _three_way(lambda qq: kf.fk(model, qq).R, q)
    leaves, spec = tree_flatten(model)
    for i, leaf in enumerate(leaves):
        if leaf.numel() == 0:
            continue

        def f(flat, i=i, leaf=leaf):
            ls = list(leaves)
            ls[i] = flat.reshape(leaf.shape)
            m = tree_unflatten(ls, spec)
            return torch.cat((kf.marker_positions(m, q).reshape(-1), kf.fk(m, q).t.reshape(-1)))

        _three_way(f, leaf.reshape(-1).clone())


def test_gradient_reaches_every_leaf_of_the_lower_body_model():
    model = kf.models.lower_body("cmu", dtype=f64)
    q = model.default_q() + 0.2
    g = torch.func.grad(lambda m: kf.marker_positions(m, q).square().sum())(model)
    leaves = tree_flatten(g)[0]
    names = ["parent_location", "child_location", "marker_offsets", "body_scales", "global_scale", "axes"]
    for n in names:
        assert getattr(g, n).abs().sum() > 0, n
    assert all(torch.isfinite(x).all() for x in leaves)


def test_scaling_semantics_on_a_two_segment_chain():
    mb = kf.ModelBuilder()
    mb.add_body("thigh", kf.Joint.pin("hip", "ground", "hip", parent_location=(0, 1, 0)))
    mb.add_body(
        "shank",
        kf.Joint(
            "knee",
            "thigh",
            parent_location=(0, -0.4, 0),
            child_location=(0, 0.1, 0),
            rotations=(kf.Dof((0, 0, 1), "knee"),),
            translations=(kf.Dof((1, 0, 0), "knee", kf.functions.Linear(0.1, 0.0)),),
        ),
    )
    mb.add_marker("ankle", "shank", (0, -0.4, 0))
    m = mb.build(dtype=f64)
    q = torch.tensor([0.0, 1.0], dtype=f64)  # hip, knee
    s = m.replace(body_scales=torch.tensor([[2.0, 3.0, 1.0], [1.0, 0.5, 1.0]], dtype=f64))
    g = s.replace(global_scale=torch.tensor(2.0, dtype=f64))
    x0 = kf.marker_positions(m, q)[0]
    # unscaled: knee at (0, 0.6); translation 0.1 along thigh x; shank rotated by 1 rad
    R = torch.tensor([[math.cos(1), -math.sin(1)], [math.sin(1), math.cos(1)]], dtype=f64)
    expect = torch.tensor([0.1, 0.6], dtype=f64) + R @ torch.tensor([0, -0.5], dtype=f64)
    torch.testing.assert_close(x0[:2], expect)
    # thigh scales the knee location (parent side, y*3) and the knee translation (x*2);
    # shank scales its child-side location and marker (y*0.5); ground does not scale the hip
    x1 = kf.marker_positions(s, q)[0]
    expect1 = torch.tensor([0.2, 1 - 1.2], dtype=f64) + R @ torch.tensor([0, -0.25], dtype=f64)
    torch.testing.assert_close(x1[:2], expect1)
    # global scale multiplies every body's lengths but not the ground-to-root placement
    x2 = kf.marker_positions(g, q)[0]
    expect2 = torch.tensor([0.4, 1 - 2.4], dtype=f64) + R @ torch.tensor([0, -0.5], dtype=f64)
    torch.testing.assert_close(x2[:2], expect2)


def test_models_are_immutable_and_tree_map_moves_dtype():
    model = kf.models.lower_body()
    with pytest.raises(Exception):
        model.marker_offsets = model.marker_offsets * 2  # frozen dataclass
    m64 = model.to(dtype=f64)
    assert m64.dtype == f64 and model.dtype == torch.float32
    doubled = kf.tree_map(lambda x: x * 2, model)
    assert doubled.topology == model.topology
    torch.testing.assert_close(doubled.marker_offsets, model.marker_offsets * 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_fullgraph_equals_eager(dtype):
    model = kf.models.lower_body("cmu", dtype=dtype)
    q = model.default_q() + 0.3 * torch.randn(4, len(model.coordinate_names), dtype=dtype, generator=torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    compiled = torch.compile(kf.marker_positions, fullgraph=True, dynamic=False)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(compiled(model, q), kf.marker_positions(model, q), atol=tol, rtol=0)
