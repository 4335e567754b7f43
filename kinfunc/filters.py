"""Zero-phase low-pass Butterworth filtering in numpy (no scipy dependency).

Design: analog Butterworth prototype poles, prewarped cutoff, bilinear transform, cascaded
second-order sections (each with unit gain at DC). Application (:func:`filtfilt`): odd
extension of ``padlen`` samples at both ends, steady-state initial conditions scaled by the
first sample, a forward and a backward pass -- the same procedure as scipy's ``sosfiltfilt``,
so results agree with it to rounding. The magnitude response of the two passes is the square of
the designed filter's: -6 dB at ``cutoff``, zero phase.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["butter_lowpass_sos", "filtfilt", "padlen_for"]


def butter_lowpass_sos(order: int, cutoff_hz: float, rate_hz: float) -> np.ndarray:
    """Second-order sections ``(n_sections, 6)`` rows ``[b0, b1, b2, 1, a1, a2]`` of a digital
    Butterworth low-pass of ``order`` with -3 dB at ``cutoff_hz`` (sampling ``rate_hz``)."""
    if int(order) != order or order < 1:
        raise ValueError(f"filter order must be a positive integer, not {order!r}")
    order = int(order)
    if not (0 < cutoff_hz < rate_hz / 2):
        raise ValueError(f"cutoff {cutoff_hz} Hz must lie between 0 and the Nyquist frequency {rate_hz / 2} Hz")
    fs2 = 2.0 * rate_hz
    wc = fs2 * math.tan(math.pi * cutoff_hz / rate_hz)  # prewarped analog cutoff (rad/s)
    k = np.arange(1, order + 1)
    p_analog = wc * np.exp(1j * math.pi * (2 * k + order - 1) / (2 * order))
    p = (fs2 + p_analog) / (fs2 - p_analog)  # bilinear transform; zeros all at z = -1
    sections = []
    upper = sorted([z for z in p if z.imag > 1e-12], key=lambda z: -abs(z))
    for z in upper:
        a1, a2 = -2.0 * z.real, abs(z) ** 2
        g = (1.0 + a1 + a2) / 4.0
        sections.append([g, 2 * g, g, 1.0, a1, a2])
    if order % 2:
        z = float(p[np.argmin(np.abs(p.imag))].real)
        g = (1.0 - z) / 2.0
        sections.append([g, g, 0.0, 1.0, -z, 0.0])
    return np.asarray(sections, dtype=np.float64)


def padlen_for(sos: np.ndarray) -> int:
    """Samples of odd extension at each end (scipy's ``sosfiltfilt`` default)."""
    ntaps = 2 * len(sos) + 1
    ntaps -= min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return 3 * ntaps


def _zi(sos: np.ndarray) -> np.ndarray:
    """Steady-state state ``(n_sections, 2)`` of a unit step (direct form II transposed)."""
    out = np.zeros((len(sos), 2))
    scale = 1.0
    for s, (b0, b1, b2, _, a1, a2) in enumerate(sos):
        # z1 = b1 - a1 y + z2, z2 = b2 - a2 y for input 1 and output y = gain
        y = (b0 + b1 + b2) / (1.0 + a1 + a2)
        z2 = b2 - a2 * y
        z1 = b1 - a1 * y + z2
        out[s] = scale * np.array([z1, z2])
        scale *= y
    return out


def _sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """Filter each row of ``x (R, N)`` along the last axis; ``zi (n_sections, R, 2)``."""
    y = np.array(x, dtype=np.float64, copy=True)
    z = zi.copy()
    N = y.shape[1]
    for s, (b0, b1, b2, _, a1, a2) in enumerate(sos):
        z1, z2 = z[s, :, 0].copy(), z[s, :, 1].copy()
        col = y  # in place, section by section
        for n in range(N):
            xn = col[:, n]
            yn = b0 * xn + z1
            z1 = b1 * xn - a1 * yn + z2
            z2 = b2 * xn - a2 * yn
            col[:, n] = yn
    return y


def filtfilt(sos: np.ndarray, x: np.ndarray, padlen: int | None = None) -> np.ndarray:
    """Zero-phase filtering of each row of ``x (R, N)`` (``N > padlen``)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return filtfilt(sos, x[None], padlen)[0]
    pl = padlen_for(sos) if padlen is None else padlen
    N = x.shape[1]
    if N <= pl:
        raise ValueError(f"{N} samples: need more than {pl} (the padding) to filter")
    if pl:
        left = 2 * x[:, :1] - x[:, pl:0:-1]
        right = 2 * x[:, -1:] - x[:, -2 : -pl - 2 : -1]
        ext = np.concatenate([left, x, right], axis=1)
    else:
        ext = x
    zi = _zi(sos)[:, None, :]  # (S, 1, 2)
    y = _sosfilt(sos, ext, zi * ext[None, :, :1])
    y = _sosfilt(sos, y[:, ::-1], zi * y[None, :, -1:])[:, ::-1]
    return y[:, pl : pl + N] if pl else y


def filtfilt_ragged(sos: np.ndarray, segments: list[np.ndarray], padlen: int | None = None) -> list[np.ndarray]:
    """:func:`filtfilt` of several 1-D segments of different lengths (each ``> padlen``) in
    one batched pass: rows are left-aligned and zero-padded; the filters are causal, so the
    padding never reaches the samples that are kept."""
    if not segments:
        return []
    pl = padlen_for(sos) if padlen is None else padlen
    lens = np.array([len(s) for s in segments])
    if (lens <= pl).any():
        raise ValueError(f"every segment needs more than {pl} samples")
    R, W = len(segments), int(lens.max()) + 2 * pl
    ext = np.zeros((R, W))
    for r, s in enumerate(segments):
        s = np.asarray(s, dtype=np.float64)
        if pl:
            e = np.concatenate([2 * s[:1] - s[pl:0:-1], s, 2 * s[-1:] - s[-2 : -pl - 2 : -1]])
        else:
            e = s
        ext[r, : len(e)] = e
    le = lens + 2 * pl
    zi = _zi(sos)[:, None, :]
    y = _sosfilt(sos, ext, zi * ext[None, :, :1])
    n = np.arange(W)[None, :]
    rev = np.clip(le[:, None] - 1 - n, 0, None)  # reversed index within each row
    yr = np.take_along_axis(y, rev, axis=1)
    yr = _sosfilt(sos, yr, zi * yr[None, :, :1])
    y2 = np.take_along_axis(yr, rev, axis=1)
    return [y2[r, pl : pl + lens[r]].copy() for r in range(R)]
