"""Differentiable coordinate functions (OpenSim's ``Function`` family).

A joint's rotation angle or translation along an axis is a function of a coordinate:
identity for a plain pin joint, a natural cubic spline for a knee's rolling translation, and
so on. The *specs* below (plain floats, hashable) describe one function; a model collects all
functions of one kind into a *group* whose parameters are tensor leaves of the model
(``(n, ...)`` per group), evaluated together in one vectorised call by :func:`evaluate`.

Kinds
-----
``Constant(value)``            f(x) = value
``Linear(slope, intercept)``   f(x) = slope * x + intercept
``Polynomial(coefficients)``   highest power first (numpy/OpenSim order)
``Spline(x, y, end)``          piecewise cubic through knots; ``end="natural"`` (zero second
                               derivative at the ends; OpenSim 4 reads its legacy ``NaturalCubicSpline`` as a SimmSpline) or
                               ``"simm"`` (third derivative at each end equal to that of the
                               cubic through the four nearest knots, the classic
                               Forsythe-Malcolm-Moler construction used by OpenSim
                               ``SimmSpline``). Outside the knots it continues linearly with
                               the end slope.
``Multiplier(fn, scale)``      scale * fn(x); folded into ``fn``'s parameters at build time
                               (every kind above is linear in its parameters).
"""
from __future__ import annotations

import dataclasses
import enum
import math
from typing import Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "FnKind",
    "SplineEnd",
    "Constant",
    "Linear",
    "Polynomial",
    "Spline",
    "Multiplier",
    "FunctionSpec",
    "group_key",
    "group_params",
    "evaluate",
    "derivative",
    "value_and_derivative",
    "coefficients",
    "stack_tables",
    "spline_coefficients",
]


class FnKind(enum.Enum):
    CONSTANT = "constant"
    LINEAR = "linear"
    POLYNOMIAL = "polynomial"
    SPLINE = "spline"


class SplineEnd(enum.Enum):
    NATURAL = "natural"
    SIMM = "simm"


@dataclasses.dataclass(frozen=True)
class Constant:
    value: float = 0.0
    kind = FnKind.CONSTANT


@dataclasses.dataclass(frozen=True)
class Linear:
    slope: float = 1.0
    intercept: float = 0.0
    kind = FnKind.LINEAR


@dataclasses.dataclass(frozen=True)
class Polynomial:
    coefficients: tuple[float, ...]
    kind = FnKind.POLYNOMIAL

    def __post_init__(self) -> None:
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        if not self.coefficients:
            raise ValueError("Polynomial needs at least one coefficient (highest power first)")


@dataclasses.dataclass(frozen=True)
class Spline:
    x: tuple[float, ...]
    y: tuple[float, ...]
    end: SplineEnd = SplineEnd.NATURAL
    kind = FnKind.SPLINE

    def __post_init__(self) -> None:
        x = tuple(float(v) for v in self.x)
        y = tuple(float(v) for v in self.y)
        end = SplineEnd(self.end)
        if len(x) != len(y):
            raise ValueError(f"Spline: {len(x)} x knots but {len(y)} y values; give one y per x")
        if len(x) < 2:
            raise ValueError("Spline: needs at least 2 knots")
        if any(b <= a for a, b in zip(x, x[1:])):
            raise ValueError(f"Spline: x knots must be strictly increasing, got {x}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "end", end)


FunctionSpec = Union[Constant, Linear, Polynomial, Spline]


def Multiplier(fn: FunctionSpec, scale: float) -> FunctionSpec:
    """``scale * fn(x)`` as a spec of ``fn``'s kind (all kinds are linear in their parameters)."""
    s = float(scale)
    if isinstance(fn, Constant):
        return Constant(fn.value * s)
    if isinstance(fn, Linear):
        return Linear(fn.slope * s, fn.intercept * s)
    if isinstance(fn, Polynomial):
        return Polynomial(tuple(c * s for c in fn.coefficients))
    if isinstance(fn, Spline):
        return Spline(fn.x, tuple(v * s for v in fn.y), fn.end)
    raise TypeError(f"Multiplier: unsupported function {fn!r}")


def group_key(fn: FunctionSpec) -> tuple:
    """Static key of the group a function belongs to: functions with equal keys share tensors."""
    if isinstance(fn, Polynomial):
        return (FnKind.POLYNOMIAL, len(fn.coefficients))
    if isinstance(fn, Spline):
        return (FnKind.SPLINE, len(fn.x), fn.end)
    return (fn.kind,)


def group_params(key: tuple, fns: list[FunctionSpec], dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Parameter tensors of one group of functions sharing ``key``.

    constant: ``(value (n,),)``; linear: ``(slope (n,), intercept (n,))``; polynomial:
    ``(coefficients (n, D+1),)``; spline: ``(x (n, K), y (n, K))``.
    """
    kind = key[0]
    if kind is FnKind.CONSTANT:
        return (torch.tensor([f.value for f in fns], dtype=dtype),)
    if kind is FnKind.LINEAR:
        return (torch.tensor([f.slope for f in fns], dtype=dtype), torch.tensor([f.intercept for f in fns], dtype=dtype))
    if kind is FnKind.POLYNOMIAL:
        return (torch.tensor([f.coefficients for f in fns], dtype=dtype),)
    if kind is FnKind.SPLINE:
        return (torch.tensor([f.x for f in fns], dtype=dtype), torch.tensor([f.y for f in fns], dtype=dtype))
    raise ValueError(f"unknown function kind {kind}")


def group_entry(key: tuple, params: tuple[Tensor, ...], i: int) -> FunctionSpec:
    """The inverse of :func:`group_params` for one entry: the :class:`FunctionSpec` of entry
    ``i`` of a group with ``key`` and parameter tensors ``params`` (plain floats)."""
    p = [t.detach().to("cpu", torch.float64) for t in params]
    kind = key[0]
    if kind is FnKind.CONSTANT:
        return Constant(float(p[0][i]))
    if kind is FnKind.LINEAR:
        return Linear(float(p[0][i]), float(p[1][i]))
    if kind is FnKind.POLYNOMIAL:
        return Polynomial(tuple(p[0][i].tolist()))
    if kind is FnKind.SPLINE:
        return Spline(tuple(p[0][i].tolist()), tuple(p[1][i].tolist()), key[2])
    raise ValueError(f"unknown function kind {kind}")


def spline_coefficients(x: Tensor, y: Tensor, end: SplineEnd) -> tuple[Tensor, Tensor, Tensor]:
    """Cubic spline through knots ``x, y (n, K)``.

    Returns ``b, c, d (n, K)``: on interval i, ``f = y_i + b_i dx + c_i dx^2 + d_i dx^3`` with
    ``dx = x - x_i``; ``b[:, K-1]`` is the slope at the last knot (``c, d`` there are 0).
    Differentiable in both ``x`` and ``y`` (a dense ``K x K`` solve; K is small).
    """
    n, K = x.shape
    h = x[:, 1:] - x[:, :-1]  # (n, K-1)
    delta = (y[:, 1:] - y[:, :-1]) / h  # (n, K-1)
    if K == 2:
        M = torch.zeros_like(x)
    else:
        eye = torch.eye(K, dtype=x.dtype, device=x.device)
        # interior rows: h_{i-1} M_{i-1} + 2 (h_{i-1} + h_i) M_i + h_i M_{i+1} = 6 (delta_i - delta_{i-1})
        band = (
            h[:, :-1, None] * eye[:-2]
            + (2.0 * (h[:, :-1] + h[:, 1:]))[:, :, None] * eye[1:-1]
            + h[:, 1:, None] * eye[2:]
        )  # (n, K-2, K)
        rhs_mid = 6.0 * (delta[:, 1:] - delta[:, :-1])
        zero = torch.zeros_like(x[:, 0])
        if end is SplineEnd.NATURAL:  # M_0 = M_{K-1} = 0
            first, last, r0, r1 = eye[0], eye[K - 1], zero, zero
        else:
            # third derivative (M_{i+1} - M_i) / h_i at each end equals the end cubic's 6 f[x0..x3]
            first, last = eye[1] - eye[0], eye[K - 1] - eye[K - 2]
            if K >= 4:
                d2 = (delta[:, 1:] - delta[:, :-1]) / (x[:, 2:] - x[:, :-2])  # (n, K-2)
                r0 = 6.0 * h[:, 0] * (d2[:, 1] - d2[:, 0]) / (x[:, 3] - x[:, 0])
                r1 = 6.0 * h[:, -1] * (d2[:, -1] - d2[:, -2]) / (x[:, -1] - x[:, -4])
            else:  # three knots: zero third derivative at both ends (one parabola)
                r0, r1 = zero, zero
        A = torch.cat((first.expand(n, 1, K), band, last.expand(n, 1, K)), 1)
        rhs = torch.cat((r0[:, None], rhs_mid, r1[:, None]), 1)
        M = torch.linalg.solve(A, rhs)
    b = delta - h * (2.0 * M[:, :-1] + M[:, 1:]) / 6.0
    b_last = delta[:, -1:] + h[:, -1:] * (M[:, -2:-1] + 2.0 * M[:, -1:]) / 6.0
    c = M[:, :-1] / 2.0
    d = (M[:, 1:] - M[:, :-1]) / (6.0 * h)
    zero = torch.zeros_like(b_last)
    return torch.cat((b, b_last), 1), torch.cat((c, zero), 1), torch.cat((d, zero), 1)


def coefficients(key: tuple, params: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Everything about a group that does not depend on its inputs: for splines ``(x, table)``
    (knots ``(n, K)`` and a ``(n, K + 1, 5)`` table of ``[x0, y0, b, c, d]`` per piece from
    :func:`spline_coefficients`, the linear continuations below and above the knots included),
    for other kinds ``params``.

    Pass the result as ``coeffs=`` to :func:`value_and_derivative` to skip the per-call
    ``K x K`` spline solve when the same functions are evaluated many times.
    """
    if key[0] is FnKind.SPLINE:
        xk, yk = params
        b, c, d = spline_coefficients(xk, yk, key[2])
        z = torch.zeros_like(xk[:, :1])
        first = torch.stack((xk[:, :1], yk[:, :1], b[:, :1], z, z), -1)
        last = torch.stack((xk[:, -1:], yk[:, -1:], b[:, -1:], z, z), -1)
        pieces = torch.stack((xk[:, :-1], yk[:, :-1], b[:, :-1], c[:, :-1], d[:, :-1]), -1)
        return (xk, torch.cat((first, pieces, last), 1))
    return params


def stack_tables(coeffs: Sequence[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """One :func:`coefficients` result for several spline groups (any knot counts) so that
    :func:`value_and_derivative` evaluates all their splines in one pass: knots ``(n, K)`` padded
    to the largest ``K`` with ``+inf`` (no input lies above them) and tables with copies of the
    last piece. A single entry (any kind) is returned as is."""
    if len(coeffs) == 1:
        return coeffs[0]
    K = max(x.shape[1] for x, _ in coeffs)
    xs, tables = [], []
    for x, table in coeffs:
        pad = K - x.shape[1]
        xs.append(torch.cat((x, x.new_full((x.shape[0], pad), math.inf)), 1))
        tables.append(torch.cat((table, table[:, -1:].expand(-1, pad, -1)), 1))
    return torch.cat(xs, 0), torch.cat(tables, 0)


def evaluate(key: tuple, params: tuple[Tensor, ...], u: Tensor) -> Tensor:
    """Evaluate a group of ``n`` functions at inputs ``u (..., n)`` -> ``(..., n)``."""
    kind = key[0]
    if kind is FnKind.CONSTANT:
        (value,) = params
        return value + torch.zeros_like(u)
    if kind is FnKind.LINEAR:
        slope, intercept = params
        return slope * u + intercept
    if kind is FnKind.POLYNOMIAL:
        (coef,) = params
        out = coef[:, 0] + torch.zeros_like(u)
        for k in range(1, coef.shape[1]):
            out = out * u + coef[:, k]
        return out
    if kind is FnKind.SPLINE:
        xk, yk = params
        b, c, d = spline_coefficients(xk, yk, key[2])
        dx = u[..., None] - xk[:, :-1]  # (..., n, K-1)
        # interval index = number of interior knots at or below u (no data-dependent shapes)
        idx = (u[..., None] >= xk[:, 1:-1]).sum(-1)  # (..., n) in [0, K-2]
        onehot = (idx[..., None] == torch.arange(xk.shape[1] - 1, device=u.device)).to(u.dtype)
        cubic = yk[:, :-1] + dx * (b[:, :-1] + dx * (c[:, :-1] + dx * d[:, :-1]))
        inside = (cubic * onehot).sum(-1)
        below = yk[:, 0] + b[:, 0] * (u - xk[:, 0])
        above = yk[:, -1] + b[:, -1] * (u - xk[:, -1])
        return torch.where(u < xk[:, 0], below, torch.where(u > xk[:, -1], above, inside))
    raise ValueError(f"unknown function kind {kind}")


def value_and_derivative(
    key: tuple, params: tuple[Tensor, ...], u: Tensor, coeffs: tuple[Tensor, ...] | None = None
) -> tuple[Tensor, Tensor]:
    """Values and derivatives ``df/du`` of a group at inputs ``u (..., n)``, both ``(..., n)``,
    in closed form (one pass: spline intervals are located once)."""
    kind = key[0]
    if kind is FnKind.CONSTANT:
        return params[0] + torch.zeros_like(u), torch.zeros_like(u)
    if kind is FnKind.LINEAR:
        slope, intercept = params
        return slope * u + intercept, slope.expand_as(u)
    if kind is FnKind.POLYNOMIAL:
        (coef,) = params
        out = coef[:, 0] + torch.zeros_like(u)
        d = torch.zeros_like(u)
        for k in range(1, coef.shape[1]):  # Horner for value and derivative together
            d = d * u + out
            out = out * u + coef[:, k]
        return out, d
    if kind is FnKind.SPLINE:
        xk, table = coeffs if coeffs is not None else coefficients(key, params)
        n, K = xk.shape
        # piece of each input: 0 below the knots, i + 1 on [x_i, x_i+1), K at or above the last
        ut = u.reshape(-1, n).t().contiguous()  # (n, N)
        idx = torch.searchsorted(xk.contiguous(), ut, right=True)
        rows = idx + (torch.arange(n, device=u.device) * (K + 1))[:, None]
        x0, y0, b0, c0, d0 = table.reshape(-1, 5).index_select(0, rows.reshape(-1)).reshape(n, -1, 5).unbind(-1)
        h = ut - x0
        value = y0 + h * (b0 + h * (c0 + h * d0))
        slope = b0 + h * (2.0 * c0 + 3.0 * h * d0)
        return value.t().reshape(u.shape), slope.t().reshape(u.shape)
    raise ValueError(f"unknown function kind {kind}")


def derivative(key: tuple, params: tuple[Tensor, ...], u: Tensor) -> Tensor:
    """Derivatives ``df/du (..., n)`` of a group at inputs ``u (..., n)``, in closed form."""
    return value_and_derivative(key, params, u)[1]
