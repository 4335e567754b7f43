"""Coordinate functions: interpolation, end conditions, extrapolation, folding, gradients."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.func import jacfwd, jacrev

import kinfunc as kf
from kinfunc import functions as F

f64 = torch.float64
finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def knots(draw, kmin=2, kmax=9):
    k = draw(st.integers(kmin, kmax))
    x = np.cumsum([0.0] + [draw(st.floats(0.1, 1.0, **finite)) for _ in range(k - 1)]) - 1.0
    y = [draw(st.floats(-1, 1, **finite)) for _ in range(k)]
    return tuple(x), tuple(y)


def eval1(fn, u):
    key = F.group_key(fn)
    params = F.group_params(key, [fn], f64)
    return F.evaluate(key, params, torch.as_tensor(u, dtype=f64).reshape(-1, 1))[:, 0]


@given(knots(), st.sampled_from(list(F.SplineEnd)))
def test_spline_interpolates_knots_and_is_c2(kn, end):
    x, y = kn
    s = F.Spline(x, y, end)
    torch.testing.assert_close(eval1(s, x), torch.tensor(y, dtype=f64), atol=1e-10, rtol=0)
    if len(x) > 2:  # first and second derivatives continuous at interior knots
        xk, yk = (t for t in F.group_params(F.group_key(s), [s], f64))
        bb, cc, dd = F.spline_coefficients(xk, yk, s.end)
        h = xk[0, 1:] - xk[0, :-1]
        left_d1 = bb[0, :-2] + 2 * cc[0, :-2] * h[:-1] + 3 * dd[0, :-2] * h[:-1] ** 2
        left_d2 = 2 * cc[0, :-2] + 6 * dd[0, :-2] * h[:-1]
        torch.testing.assert_close(left_d1, bb[0, 1:-1], atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(left_d2, 2 * cc[0, 1:-1], atol=1e-8, rtol=1e-9)
        # and the evaluator uses these pieces: derivative by autodiff equals b at knots
        d1 = jacfwd(lambda u: eval1(s, u))(torch.tensor(x[1:-1], dtype=f64)).diagonal()
        torch.testing.assert_close(d1, bb[0, 1:-1], atol=1e-9, rtol=1e-9)


@given(knots(kmin=3))
def test_natural_spline_matches_scipy(kn):
    scipy_interp = pytest.importorskip("scipy.interpolate")
    x, y = kn
    ref = scipy_interp.CubicSpline(x, y, bc_type="natural")
    u = np.linspace(x[0], x[-1], 37)
    torch.testing.assert_close(eval1(F.Spline(x, y), u), torch.tensor(ref(u), dtype=f64), atol=1e-10, rtol=0)


@given(knots(kmin=4))
def test_simm_spline_end_third_derivative_matches_end_cubic(kn):
    x, y = kn
    s = F.Spline(x, y, F.SplineEnd.SIMM)
    d3 = lambda u: jacfwd(jacfwd(jacfwd(lambda v: eval1(s, v).sum())))(torch.tensor([u], dtype=f64))  # noqa: E731
    c_first = np.polyfit(x[:4], y[:4], 3)[0] * 6.0
    c_last = np.polyfit(x[-4:], y[-4:], 3)[0] * 6.0
    assert abs(float(d3(0.5 * (x[0] + x[1]))) - c_first) < 1e-6 * max(1, abs(c_first))
    assert abs(float(d3(0.5 * (x[-2] + x[-1]))) - c_last) < 1e-6 * max(1, abs(c_last))


def test_simm_spline_reproduces_a_cubic_exactly():
    x = np.array([-1.0, -0.4, 0.1, 0.5, 1.2, 2.0])
    y = 0.3 * x**3 - x**2 + 0.5
    s = F.Spline(tuple(x), tuple(y), F.SplineEnd.SIMM)
    u = np.linspace(-1, 2, 25)
    torch.testing.assert_close(eval1(s, u), torch.tensor(0.3 * u**3 - u**2 + 0.5, dtype=f64), atol=1e-10, rtol=0)


@given(knots(), st.sampled_from(list(F.SplineEnd)))
def test_spline_extrapolates_linearly_with_end_slopes(kn, end):
    x, y = kn
    s = F.Spline(x, y, end)
    slope = lambda u: float(jacfwd(lambda v: eval1(s, v).sum())(torch.tensor([u], dtype=f64)))  # noqa: E731
    for edge, out in ((x[0], x[0] - 0.7), (x[-1], x[-1] + 0.7)):
        sl = slope(edge + (1e-9 if edge == x[0] else -1e-9))
        expect = float(eval1(s, [edge])) + sl * (out - edge)
        assert abs(float(eval1(s, [out])) - expect) < 1e-6 * (1 + abs(expect))


def test_polynomial_highest_power_first_and_linear_constant():
    p = F.Polynomial((2.0, -1.0, 0.5))
    torch.testing.assert_close(eval1(p, [0.0, 1.0, 2.0]), torch.tensor([0.5, 1.5, 6.5], dtype=f64))
    torch.testing.assert_close(eval1(F.Linear(3.0, 1.0), [2.0]), torch.tensor([7.0], dtype=f64))
    torch.testing.assert_close(eval1(F.Constant(0.25), [9.0, -9.0]), torch.tensor([0.25, 0.25], dtype=f64))


@given(st.floats(-3, 3, **finite), knots())
def test_multiplier_scales_every_kind(scale, kn):
    x, y = kn
    u = np.linspace(x[0] - 0.5, x[-1] + 0.5, 11)
    for fn in (F.Constant(0.4), F.Linear(1.5, -0.2), F.Polynomial((0.3, 1.0, -2.0)), F.Spline(x, y), F.Spline(x, y, "simm")):
        torch.testing.assert_close(eval1(F.Multiplier(fn, scale), u), scale * eval1(fn, u), atol=1e-10, rtol=0)


def test_spline_validation_errors():
    with pytest.raises(ValueError, match="strictly increasing"):
        F.Spline((0.0, 0.0, 1.0), (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="one y per x"):
        F.Spline((0.0, 1.0), (1.0,))


@given(knots(kmin=3), st.sampled_from(list(F.SplineEnd)))
def test_spline_gradients_wrt_knots_match_finite_differences(kn, end):
    x, y = kn
    s = F.Spline(x, y, end)
    key = F.group_key(s)
    xk, yk = F.group_params(key, [s], f64)
    u = torch.tensor([[x[0] + 0.37 * (x[-1] - x[0])], [x[-1] + 0.2]], dtype=f64)

    def f(flat):
        return F.evaluate(key, (flat[: len(x)][None], flat[len(x):][None]), u)

    p = torch.cat((xk[0], yk[0]))
    Jr, Jf = jacrev(f)(p), jacfwd(f)(p)
    eps = 1e-6
    fd = torch.stack([(f(p + eps * e) - f(p - eps * e)) / (2 * eps) for e in torch.eye(len(p), dtype=f64)], -1)
    torch.testing.assert_close(Jr, Jf, atol=1e-9, rtol=0)
    torch.testing.assert_close(Jr, fd, atol=1e-6, rtol=1e-5)


@given(knots(), st.sampled_from(list(F.SplineEnd)), st.lists(st.floats(-3, 6, **finite), min_size=1, max_size=6))
def test_value_and_derivative_equal_evaluate_and_autodiff(kn, end, extra):
    """The table-lookup evaluator (IK's joint-function layer) equals :func:`evaluate` and its
    forward-mode derivative: at the knots, between them and beyond both ends; for a group of
    two splines, a polynomial and a linear function."""
    x, y = kn
    u = torch.tensor(list(x) + extra, dtype=f64)
    specs = [
        (F.Spline(x, y, end), F.Spline(x, tuple(-v for v in y), end)),
        (F.Polynomial((0.3, -0.2, 0.1, 0.5)),),
        (F.Linear(2.0, -0.1),),
    ]
    for fns in specs:
        key = F.group_key(fns[0])
        params = F.group_params(key, list(fns), f64)
        U = u[:, None].expand(-1, len(fns)).contiguous()  # (N, n)
        for coeffs in (None, F.coefficients(key, params)):
            val, der = F.value_and_derivative(key, params, U, coeffs)
            torch.testing.assert_close(val, F.evaluate(key, params, U), atol=1e-12, rtol=1e-12)
            ref = torch.func.vmap(jacfwd(lambda r: F.evaluate(key, params, r[None])[0]))(U).diagonal(dim1=-2, dim2=-1)
            torch.testing.assert_close(der, ref, atol=1e-9, rtol=1e-9)


@given(knots(kmin=2, kmax=5), knots(kmin=6, kmax=9), st.sampled_from(list(F.SplineEnd)), st.floats(-3, 3, **finite))
def test_stacked_spline_tables_equal_separate_groups(a, b, end, u):
    """Splines of different knot counts evaluated in one pass (padded tables) give each group's
    own values and slopes, inside the knots and on the linear continuations outside."""
    groups = [F.Spline(*a, end), F.Spline(*b, end)]
    coeffs = []
    separate = []
    U = torch.tensor([[u], [u - 1.5], [u + 1.5]], dtype=f64)
    for fn in groups:
        key = F.group_key(fn)
        params = F.group_params(key, [fn], f64)
        coeffs.append(F.coefficients(key, params))
        separate.append(F.value_and_derivative(key, params, U))
    key = F.group_key(groups[0])
    val, der = F.value_and_derivative(key, None, U.expand(3, 2).contiguous(), F.stack_tables(coeffs))
    for k, (v, d) in enumerate(separate):
        torch.testing.assert_close(val[:, k : k + 1], v, rtol=0, atol=1e-12)
        torch.testing.assert_close(der[:, k : k + 1], d, rtol=0, atol=1e-12)


def test_group_entry_inverts_group_params_on_every_builtin_model():
    """kf.functions.group_entry (the spec of one entry of a parameter group, used by the .osim
    writer) returns specs whose group_params are the group's tensors again."""
    from kinfunc.functions import group_entry, group_params

    for model in (kf.models.full_body("cmu"), kf.models.lower_body("cmu")):
        topo = model.topology
        for g, params in list(zip(topo.slot_groups, model.slot_params)) + list(zip(topo.coupler_groups, model.coupler_params)):
            specs = [group_entry(g.key, params, i) for i in range(len(g.outputs))]
            again = group_params(g.key, specs, torch.float64)
            for a, b in zip(again, params):
                torch.testing.assert_close(a, b.double(), rtol=0, atol=1e-12)
