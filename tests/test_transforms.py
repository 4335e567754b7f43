"""SO(3)/SE(3) ops: group axioms, round trips, agreement with independent constructions,
and finite values/gradients at the identity and at rotations by pi."""
import math

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.func import jacrev

from kinfunc import transforms as tf

f64 = torch.float64
finite = dict(allow_nan=False, allow_infinity=False)
angles3 = st.tuples(*[st.floats(-math.pi, math.pi, **finite)] * 3)
rotvecs = st.tuples(*[st.floats(-3.0, 3.0, **finite)] * 3)


def elementary(axis: int, a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    if axis == 0:
        m = [[1, 0, 0], [0, c, -s], [0, s, c]]
    elif axis == 1:
        m = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    else:
        m = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    return torch.tensor(m, dtype=f64)


@given(angles3)
def test_euler_is_body_fixed_xyz_product(a):
    R = tf.euler_xyz_to_matrix(torch.tensor(a, dtype=f64))
    ref = elementary(0, a[0]) @ elementary(1, a[1]) @ elementary(2, a[2])
    torch.testing.assert_close(R, ref, atol=1e-12, rtol=0)


@given(angles3)
def test_euler_round_trip(a):
    R = tf.euler_xyz_to_matrix(torch.tensor(a, dtype=f64))
    back = tf.euler_xyz_to_matrix(tf.matrix_to_euler_xyz(R))
    torch.testing.assert_close(back, R, atol=1e-10, rtol=0)


@given(rotvecs)
def test_rotvec_matches_matrix_exponential(v):
    v = torch.tensor(v, dtype=f64)
    torch.testing.assert_close(tf.rotvec_to_matrix(v), torch.linalg.matrix_exp(tf.skew(v)), atol=1e-12, rtol=0)


@given(rotvecs, st.floats(-4, 4, **finite))
def test_axis_angle_equals_rotvec(v, angle):
    v = torch.tensor(v, dtype=f64)
    if v.norm() < 1e-3:
        return
    axis = v / v.norm()
    a = torch.tensor(angle, dtype=f64)
    torch.testing.assert_close(tf.axis_angle_to_matrix(axis, a), tf.rotvec_to_matrix(axis * a), atol=1e-12, rtol=0)


@given(rotvecs)
def test_quaternion_round_trips(v):
    R = tf.rotvec_to_matrix(torch.tensor(v, dtype=f64))
    q = tf.matrix_to_quat(R)
    assert abs(float(q.norm()) - 1.0) < 1e-12 and float(q[0]) >= 0
    torch.testing.assert_close(tf.quat_to_matrix(q), R, atol=1e-12, rtol=0)
    torch.testing.assert_close(tf.rotvec_to_matrix(tf.matrix_to_rotvec(R)), R, atol=1e-10, rtol=0)


@given(rotvecs, rotvecs, st.tuples(*[st.floats(-1, 1, **finite)] * 6))
def test_se3_group_axioms(v1, v2, ts):
    R1, R2 = tf.rotvec_to_matrix(torch.tensor(v1, dtype=f64)), tf.rotvec_to_matrix(torch.tensor(v2, dtype=f64))
    t1, t2 = torch.tensor(ts[:3], dtype=f64), torch.tensor(ts[3:], dtype=f64)
    p = torch.tensor([0.3, -0.2, 0.5], dtype=f64)
    # composition acts like applying one after the other
    R12, t12 = tf.compose(R1, t1, R2, t2)
    torch.testing.assert_close(tf.apply(R12, t12, p), tf.apply(R1, t1, tf.apply(R2, t2, p)), atol=1e-12, rtol=0)
    # inverse
    Ri, ti = tf.inverse(R1, t1)
    I, z = tf.compose(R1, t1, Ri, ti)
    torch.testing.assert_close(I, torch.eye(3, dtype=f64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z, torch.zeros(3, dtype=f64), atol=1e-12, rtol=0)
    # orthonormal, det +1
    torch.testing.assert_close(R12 @ R12.T, torch.eye(3, dtype=f64), atol=1e-12, rtol=0)
    assert abs(float(torch.linalg.det(R12)) - 1) < 1e-12
    H = tf.to_homogeneous(R12, t12)
    torch.testing.assert_close(H, tf.to_homogeneous(R1, t1) @ tf.to_homogeneous(R2, t2), atol=1e-12, rtol=0)


def _finite_jac(fn, x):
    J = jacrev(fn)(x)
    assert torch.isfinite(fn(x)).all(), "non-finite value"
    assert torch.isfinite(J).all(), "non-finite gradient"
    return J


def test_no_nan_at_identity_and_pi():
    zero = torch.zeros(3, dtype=f64)
    _finite_jac(tf.rotvec_to_matrix, zero)
    for axis in torch.eye(3, dtype=f64):
        pi_vec = axis * math.pi
        _finite_jac(tf.rotvec_to_matrix, pi_vec)
        R = tf.rotvec_to_matrix(pi_vec)
        _finite_jac(tf.matrix_to_quat, R)
        _finite_jac(tf.matrix_to_rotvec, R)
        torch.testing.assert_close(tf.quat_to_matrix(tf.matrix_to_quat(R)), R, atol=1e-12, rtol=0)
        torch.testing.assert_close(tf.matrix_to_rotvec(R).abs(), pi_vec.abs(), atol=1e-9, rtol=0)
    eye = torch.eye(3, dtype=f64)
    _finite_jac(tf.matrix_to_quat, eye)
    _finite_jac(tf.matrix_to_rotvec, eye)
    _finite_jac(tf.quat_to_rotvec, torch.tensor([1.0, 0, 0, 0], dtype=f64))
    _finite_jac(lambda a: tf.axis_angle_to_matrix(torch.tensor([0, 0, 1.0], dtype=f64), a), torch.tensor(math.pi, dtype=f64))


def test_rotvec_gradient_matches_finite_differences_near_zero():
    v = torch.tensor([1e-6, -2e-6, 0.5e-6], dtype=f64)
    J = jacrev(tf.rotvec_to_matrix)(v)
    # derivative of exp at 0 is the skew generator
    for k in range(3):
        e = torch.zeros(3, dtype=f64)
        e[k] = 1.0
        torch.testing.assert_close(J[..., k], tf.skew(e), atol=1e-5, rtol=0)


def test_broadcasting_shapes():
    v = torch.randn(4, 5, 3, dtype=f64)
    R = tf.rotvec_to_matrix(v)
    assert R.shape == (4, 5, 3, 3)
    assert tf.matrix_to_quat(R).shape == (4, 5, 4)
    assert tf.matrix_to_euler_xyz(R).shape == (4, 5, 3)
    Rc, tc = tf.compose(R, v, R[:1], v[:1])
    assert Rc.shape == (4, 5, 3, 3) and tc.shape == (4, 5, 3)
