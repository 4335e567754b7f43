"""kinfunc.nn: the keypoint layer for training (values, per-subject scales, derivatives,
torch.func / torch.compile, the joint-limit penalty, the example's training run)."""
import importlib.util
from pathlib import Path

import pytest
import torch
from torch.func import grad, jacrev, vmap

import kinfunc as kf

F64 = torch.float64
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "keypoint_regression.py"
SIZES = {"coco17": 17, "halpe26": 26, "body25": 25, "h36m17": 17, "smpl24": 24, "opencap": 43}


@pytest.fixture(scope="module")
def model():
    return kf.models.full_body(marker_set="coco17", dtype=F64)


def _poses(model, *shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = model.coordinate_limits()
    lo, hi = lo.clamp(min=-1.0), hi.clamp(max=1.0)
    return lo + (hi - lo) * torch.rand(*shape, lo.numel(), generator=g, dtype=F64)


def _scales(model, *shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.8 + 0.4 * torch.rand(*shape, model.topology.n_bodies, 3, generator=g, dtype=F64)


def test_layer_equals_marker_positions(model):
    layer = kf.nn.KeypointLayer(model)
    q = _poses(model, 3, 5)
    torch.testing.assert_close(layer(q), kf.marker_positions(model, q), rtol=0, atol=0)
    assert layer(q[0, 0]).shape == (17, 3)
    # a given model restricted to some of its markers, in the order asked for
    sub = kf.nn.KeypointLayer(model, keypoints=["right_knee", "nose"])
    assert sub.keypoint_names == ("right_knee", "nose")
    torch.testing.assert_close(sub(q), kf.marker_positions(model.with_markers(["right_knee", "nose"]), q), rtol=0, atol=0)
    # a keypoint set the model has under other names: a clear error
    with pytest.raises(ValueError, match="no marker"):
        kf.nn.KeypointLayer(kf.models.full_body("cmu"), keypoints="coco17")
    # the default model is full_body with that set, float32
    default = kf.nn.KeypointLayer(keypoints="coco17")
    torch.testing.assert_close(default(q.float()), kf.marker_positions(kf.models.full_body("coco17"), q.float()))


@pytest.mark.parametrize("name", sorted(SIZES))
def test_keypoint_names_of_each_set(name):
    layer = kf.nn.KeypointLayer(keypoints=name)
    assert layer.keypoint_names == kf.nn.keypoint_names(name) == kf.models.full_body(marker_set=name).marker_names
    assert len(layer.keypoint_names) == SIZES[name]
    assert layer.coordinate_names == kf.models.full_body().coordinate_names
    assert layer(torch.zeros(2, 40)).shape == (2, SIZES[name], 3)
    first = {"coco17": ("nose", "left_eye"), "halpe26": ("Nose", "LEye"), "body25": ("Nose", "Neck"),
             "h36m17": ("Hip", "RHip"), "smpl24": ("pelvis", "left_hip"), "opencap": ("r.ASIS_study", "L.ASIS_study")}
    assert layer.keypoint_names[:2] == first[name]


def test_batched_scales_equal_per_subject_models(model):
    P, T = 3, 4
    q = _poses(model, P, T)
    S = _scales(model, P, 1)  # one set of scales per person, shared by its frames
    g = torch.tensor([0.9, 1.0, 1.15], dtype=F64)[:, None]
    layer = kf.nn.KeypointLayer(model)
    x = layer(q, S, g)
    xs = kf.nn.keypoints(model, q, S)
    xg = kf.nn.keypoints(model, q, global_scale=g)
    assert x.shape == (P, T, 17, 3)
    for p in range(P):
        subject = model.replace(body_scales=S[p, 0], global_scale=g[p, 0])
        torch.testing.assert_close(x[p], kf.marker_positions(subject, q[p]), rtol=0, atol=1e-14)
        torch.testing.assert_close(xs[p], kf.marker_positions(model.replace(body_scales=S[p, 0]), q[p]), rtol=0, atol=1e-14)
        torch.testing.assert_close(xg[p], kf.marker_positions(model.replace(global_scale=g[p, 0]), q[p]), rtol=0, atol=1e-14)
    # unit scales: exactly the unscaled model; scales for each frame too
    torch.testing.assert_close(layer(q, torch.ones_like(S)), layer(q), rtol=0, atol=1e-15)
    Sf = _scales(model, P, T, seed=3)
    xf = layer(q, Sf)
    torch.testing.assert_close(xf[1, 2], kf.marker_positions(model.replace(body_scales=Sf[1, 2]), q[1, 2]), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="scales must be"):
        layer(q, S[..., :2])


def test_scaling_rule_scales_joint_translations():
    """The rolling knee's translation slots and the shoulder girdle's scale with their parent."""
    m = kf.models.full_body("coco17", dtype=F64)
    q = _poses(m, 2, seed=5)
    S = _scales(m, 2, seed=6)
    x = kf.nn.keypoints(m, q, S)
    for p in range(2):
        torch.testing.assert_close(x[p], kf.marker_positions(m.replace(body_scales=S[p]), q[p]), rtol=0, atol=1e-14)
    assert (x - kf.nn.keypoints(m, q)).abs().max() > 0.01


def test_gradients_match_finite_differences(model):
    small = model.with_markers(["left_wrist", "right_ankle", "nose"])
    q = _poses(small, 2, seed=7).requires_grad_()
    S = _scales(small, 2, seed=8).requires_grad_()
    g = torch.tensor([1.05, 0.95], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, S, g: kf.nn.keypoints(small, q, S, g), (q, S, g))
    assert torch.autograd.gradcheck(lambda q: kf.nn.keypoints(small, q), (q,))


def test_torch_func_transforms_agree_with_eager(model):
    layer = kf.nn.KeypointLayer(model)
    q = _poses(model, 4, seed=9)
    S = _scales(model, 4, seed=10)
    torch.testing.assert_close(vmap(layer)(q, S), layer(q, S), rtol=0, atol=1e-14)

    def loss(qq, ss):
        return layer(qq, ss).square().sum() + layer.joint_limit_penalty(qq)

    qq = q[0].clone().requires_grad_()
    ss = S[0].clone().requires_grad_()
    loss(qq, ss).backward()
    gq, gs = grad(loss, argnums=(0, 1))(q[0], S[0])
    torch.testing.assert_close(gq, qq.grad)
    torch.testing.assert_close(gs, ss.grad)
    J = jacrev(layer)(q[0], S[0])
    J_eager = torch.autograd.functional.jacobian(lambda qq: layer(qq, S[0]), q[0])
    assert J.shape == (17, 3, 40)
    torch.testing.assert_close(J, J_eager)
    torch.testing.assert_close(vmap(jacrev(layer))(q, S)[2], jacrev(layer)(q[2], S[2]))
    # a batch of subjects under vmap: per-person scales, frames inside
    qp = _poses(model, 2, 3, seed=11)
    Sp = _scales(model, 2, seed=12)
    torch.testing.assert_close(vmap(lambda a, b: layer(a, b))(qp, Sp), layer(qp, Sp[:, None]), rtol=0, atol=1e-14)


def test_torch_compile_forward_and_backward():
    """One small compile (fullgraph). aot_eager: dynamo capture + AOT autograd in ~6 s; inductor
    code generation for the full body takes ~80 s on 2 cores (bench/bench_keypoint_layer.py runs it)."""
    layer = kf.nn.KeypointLayer(keypoints="coco17")
    m = layer.model
    q = _poses(m, 8, seed=13).float()
    S = _scales(m, 8, seed=14).float()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    qc = q.clone().requires_grad_()
    y = compiled(qc, S)
    y.square().sum().backward()
    qe = q.clone().requires_grad_()
    ye = layer(qe, S)
    ye.square().sum().backward()
    torch.testing.assert_close(y, ye)
    torch.testing.assert_close(qc.grad, qe.grad)


def test_joint_limit_penalty(model):
    layer = kf.nn.KeypointLayer(model)
    lo, hi = model.coordinate_limits()
    clamped = torch.tensor(model.topology.coordinate_clamped)
    inside = _poses(model, 6, seed=15)
    assert torch.equal(kf.nn.joint_limit_penalty(model, inside), torch.zeros(6, dtype=F64))
    assert torch.equal(layer.joint_limit_penalty(inside), torch.zeros(6, dtype=F64))
    # unclamped coordinates (the pelvis) are never penalised
    q = model.default_q().clone()
    q[:6] = 50.0
    assert float(kf.nn.joint_limit_penalty(model, q)) == 0.0
    # one coordinate 0.1 above its upper limit, another 0.2 below its lower one
    k = model.topology.coordinate_index("knee_angle_r")
    j = model.topology.coordinate_index("elbow_flex_l")
    assert clamped[k] and clamped[j]
    q = model.default_q().clone()
    q[k] = hi[k] + 0.1
    q[j] = lo[j] - 0.2
    q.requires_grad_()
    pen = kf.nn.joint_limit_penalty(model, q)
    torch.testing.assert_close(pen, torch.tensor(0.1**2 + 0.2**2, dtype=F64))
    (gq,) = torch.autograd.grad(pen, q)
    expect = torch.zeros_like(gq)
    expect[k], expect[j] = 2 * 0.1, -2 * 0.2
    torch.testing.assert_close(gq, expect)
    torch.testing.assert_close(layer.joint_limit_penalty(q), pen)
    assert torch.autograd.gradcheck(lambda x: kf.nn.joint_limit_penalty(model, x), (q,))
    # margin: the penalty starts that far inside the range
    q2 = torch.where(clamped, 0.5 * (lo + hi), model.default_q())  # mid-range: far from every limit
    q2[k] = hi[k] - 0.05
    torch.testing.assert_close(kf.nn.joint_limit_penalty(model, q2, margin=0.1), torch.tensor(0.05**2, dtype=F64))
    # batched: (P, T, C) -> (P, T)
    assert kf.nn.joint_limit_penalty(model, _poses(model, 2, 3)).shape == (2, 3)


def test_model_tensors_are_buffers_unless_learned(model):
    layer = kf.nn.KeypointLayer(model)
    assert list(layer.parameters()) == []
    assert "marker_offsets" in dict(layer.named_buffers())
    f32 = layer.to(torch.float32)
    assert f32.model.dtype == torch.float32 and f32.limit_lo.dtype == torch.float32
    learned = kf.nn.KeypointLayer(kf.models.full_body("coco17", dtype=F64), learn_model=True)
    names = dict(learned.named_parameters())
    assert {"marker_offsets", "body_scales", "parent_location"} <= set(names)
    learned(_poses(model, 2)).sum().backward()
    assert names["marker_offsets"].grad is not None and names["marker_offsets"].grad.abs().sum() > 0
    assert "KeypointLayer(model='full_body_coco17', keypoints=17" in repr(learned)


def test_example_training_run_reduces_the_loss():
    spec = importlib.util.spec_from_file_location("keypoint_regression", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(steps=30, verbose=False)
    losses = out["losses"]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.15 * losses[0], losses
    assert out["keypoint_error_mm"] < 400.0
