"""Measured marker trajectories (:class:`MarkerTrial`), shared by all loaders."""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["DataFileError", "DataFileWarning", "GapInfo", "MarkerTrial", "OrientationGuess", "axes_rotation"]


class DataFileError(ValueError):
    """A marker data file (TRC, C3D) cannot be read: the message names the file, where in it
    (line, byte offset, parameter), the cause and the fix."""


class DataFileWarning(UserWarning):
    """Something in a data file was repaired or interpreted (reported, never silent); the same
    text is kept in ``trial.meta["warnings"]``."""


@dataclasses.dataclass(frozen=True)
class MarkerTrial:
    """Marker trajectories of one trial, in metres, NaN where a marker is missing.

    * ``names``: marker labels ``(M,)``.
    * ``xyz``: ``(T, M, 3)`` float64 positions in metres, lab frame (see :meth:`reoriented`).
    * ``rate``: sampling rate in Hz.
    * ``time``: ``(T,)`` seconds.
    * ``units``: the length unit as read from the file (``"mm"``, ``"m"``, ``"cm"``).
    * ``source``: the file it came from, if any; ``meta``: anything else the loader reports.
    * ``confidence``: ``(T, M)`` in ``[0, 1]`` or ``None`` (= 1): how much each sample counts
      (a pose estimator's keypoint scores). IK multiplies each marker's weight by it per
      frame; 0 is a gap.
    """

    names: tuple[str, ...]
    xyz: Tensor
    rate: float
    time: Tensor
    units: str = "m"
    source: Optional[str] = None
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    confidence: Optional[Tensor] = None

    def __post_init__(self) -> None:
        T = self.xyz.shape[0]
        if self.xyz.ndim != 3 or self.xyz.shape[1:] != (len(self.names), 3):
            raise ValueError(
                f"MarkerTrial: xyz shape {tuple(self.xyz.shape)} does not match (T, {len(self.names)}, 3)"
            )
        if self.time.shape != (T,):
            raise ValueError(f"MarkerTrial: time shape {tuple(self.time.shape)} != ({T},)")
        c = self.confidence
        if c is not None:
            if tuple(c.shape) != (T, len(self.names)):
                raise ValueError(f"MarkerTrial: confidence shape {tuple(c.shape)} != ({T}, {len(self.names)}) (frames, markers)")
            if not bool(((c >= 0) & (c <= 1)).all()):
                raise ValueError("MarkerTrial: confidence must lie in [0, 1] (NaN not allowed; use 0 for a missing sample)")

    @property
    def n_frames(self) -> int:
        return self.xyz.shape[0]

    @property
    def n_markers(self) -> int:
        return len(self.names)

    def select(self, names: Sequence[str]) -> "MarkerTrial":
        """Keep markers ``names`` (in that order); unknown names raise ``KeyError`` listing them."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise KeyError(f"{self.source or 'trial'}: no marker(s) {missing}; available: {', '.join(self.names)}")
        idx = [self.names.index(n) for n in names]
        c = None if self.confidence is None else self.confidence[:, idx]
        return dataclasses.replace(self, names=tuple(names), xyz=self.xyz[:, idx], confidence=c)

    def slice(self, t0: Optional[float] = None, t1: Optional[float] = None) -> "MarkerTrial":
        """Frames with ``t0 <= time <= t1`` (seconds; ``None`` = open end)."""
        keep = torch.ones_like(self.time, dtype=torch.bool)
        eps = 1e-9
        if t0 is not None:
            keep &= self.time >= t0 - eps
        if t1 is not None:
            keep &= self.time <= t1 + eps
        c = None if self.confidence is None else self.confidence[keep]
        return dataclasses.replace(self, xyz=self.xyz[keep], time=self.time[keep], confidence=c)

    # ------------------------------------------------------------------ names
    def renamed(self, mapping: Mapping[str, str]) -> "MarkerTrial":
        """Rename markers (``old -> new``; e.g. ``kf.markersets.match(...).rename_map``).
        Unknown old names raise ``KeyError``; a result with repeated names ``ValueError``."""
        missing = [k for k in mapping if k not in self.names]
        if missing:
            raise KeyError(f"{self.source or 'trial'}: cannot rename unknown marker(s) {missing}")
        new = tuple(mapping.get(n, n) for n in self.names)
        if len(set(new)) != len(new):
            dup = sorted({n for n in new if new.count(n) > 1})
            raise ValueError(f"renaming would give several markers the name(s) {dup}")
        return dataclasses.replace(self, names=new)

    # ------------------------------------------------------------------ gaps
    def gap_summary(self) -> dict[str, "GapInfo"]:
        """Per marker: ``GapInfo(missing, longest, gaps)`` -- frames missing, length in frames
        of the longest run of missing frames, number of such runs."""
        miss = torch.isnan(self.xyz).any(-1).cpu().numpy()  # (T, M)
        out = {}
        for m, name in enumerate(self.names):
            col = miss[:, m].astype(np.int8)
            d = np.diff(np.concatenate([[0], col, [0]]))
            starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
            lengths = ends - starts
            out[name] = GapInfo(int(col.sum()), int(lengths.max()) if lengths.size else 0, int(lengths.size))
        return out

    # ------------------------------------------------------------------ time
    def resample(self, rate: float) -> "MarkerTrial":
        """Linear interpolation onto ``time[0] + k / rate`` (``rate`` Hz) up to ``time[-1]``.
        A new sample between two old ones is missing if either of them is (gaps stay gaps,
        never bridged); one that falls on an old sample takes its value."""
        if not rate > 0:
            raise ValueError(f"rate must be positive, not {rate}")
        t = self.time.to(torch.float64)
        if self.n_frames < 2:
            return dataclasses.replace(self, rate=float(rate))
        n = int(math.floor(float(t[-1] - t[0]) * rate + 1e-9)) + 1
        tn = t[0] + torch.arange(n, dtype=torch.float64) / rate
        i0, i1, w = linear_brackets(t, tn)
        # a new time within 1e-9 of a frame interval of an old sample *is* that sample
        w = torch.where(w < 1e-9, torch.zeros_like(w), torch.where(w > 1 - 1e-9, torch.ones_like(w), w))
        x0, x1 = self.xyz[i0], self.xyz[i1]
        w_ = w.to(self.xyz.dtype)[:, None, None]
        x = torch.where(w_ == 0, x0, torch.where(w_ == 1, x1, x0 + w_ * (x1 - x0)))
        c = self.confidence
        if c is not None:  # the lower of the two neighbours' confidences (never more than either)
            wc = w.to(c.dtype)[:, None]
            c = torch.where(wc == 0, c[i0], torch.where(wc == 1, c[i1], torch.minimum(c[i0], c[i1])))
        return dataclasses.replace(self, xyz=x, time=tn.to(self.time.dtype), rate=float(rate), confidence=c)

    def filtered(self, cutoff_hz: float, order: int = 4) -> "MarkerTrial":
        """Zero-phase low-pass Butterworth (``order``, -3 dB at ``cutoff_hz`` per pass; run
        forward and backward, so -6 dB overall and no lag), as scipy's ``sosfiltfilt``.

        Gaps are respected: each contiguous run of present samples of a marker is filtered on
        its own (odd extension at both ends); runs not longer than the padding
        (``3 * (2 * ceil(order / 2) + 1)`` minus one for odd orders) stay unfiltered and are
        listed in ``meta["unfiltered_runs"]`` (marker, first frame, last frame) and warned about.
        """
        from .filters import butter_lowpass_sos, filtfilt_ragged, padlen_for

        sos = butter_lowpass_sos(order, cutoff_hz, self.rate)
        pl = padlen_for(sos)
        x = self.xyz.detach().cpu().numpy().astype(np.float64)
        miss = np.isnan(x).any(-1)
        segs, where, short = [], [], []
        for m in range(self.n_markers):
            d = np.diff(np.concatenate([[0], (~miss[:, m]).astype(np.int8), [0]]))
            for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
                if b - a > pl:
                    for k in range(3):
                        segs.append(x[a:b, m, k])
                        where.append((m, a, b, k))
                else:
                    short.append((self.names[m], int(a), int(b - 1)))
        out = x.copy()
        for (m, a, b, k), y in zip(where, filtfilt_ragged(sos, segs, pl)):
            out[a:b, m, k] = y
        meta = dict(self.meta)
        meta["unfiltered_runs"] = short
        meta["filter"] = {"kind": "butterworth lowpass, zero phase", "cutoff_hz": cutoff_hz, "order": order}
        if short:
            warnings.warn(
                f"{self.source or 'trial'}: {len(short)} run(s) of <= {pl} samples left unfiltered "
                f"(see meta['unfiltered_runs']): {short[:4]}",
                DataFileWarning,
                stacklevel=2,
            )
        return dataclasses.replace(self, xyz=torch.from_numpy(out).to(self.xyz.dtype), meta=meta)

    # ------------------------------------------------------------------ frames
    def reoriented(self, up: str = "y", forward: str = "+x") -> "MarkerTrial":
        """Express the markers in the model frame (OpenSim convention: Y up, X forward, Z to
        the right) given which *lab* axis points ``up`` and which points ``forward``
        (``"x"``, ``"+y"``, ``"-z"``...). The map is the proper rotation whose rows are the lab
        directions of model X (= forward), Y (= up) and Z (= forward x up): never a
        reflection. ``reoriented(up="y", forward="+x")`` is the identity. The rotation
        (model <- original lab, composed with earlier ones) is kept in
        ``meta["lab_to_model"]``."""
        R = axes_rotation(up=up, forward=forward)
        x = self.xyz @ R.to(self.xyz.dtype).T
        meta = dict(self.meta)
        prev = meta.get("lab_to_model")
        total = R if prev is None else R @ torch.as_tensor(prev, dtype=torch.float64)
        meta["lab_to_model"] = total.tolist()
        meta["orientation"] = {"up": up, "forward": forward}
        return dataclasses.replace(self, xyz=x, meta=meta)

    def suggest_orientation(self) -> "OrientationGuess":
        """Guess ``{"up": ..., "forward": ...}`` for :meth:`reoriented` from the data; never
        applied by itself. ``guess.reason`` says why, ``guess.confident`` whether the cues agreed.

        * up: the lab axis with the largest typical spread of markers within a frame
          (a standing or walking body is taller than it is wide or deep) weighted by how
          consistently the markers lie on one side of the origin (lab floors sit at 0);
          the sign puts foot markers (heel, toe, ankle) below the rest, else makes heights
          positive;
        * forward: the horizontal direction the pelvis markers (else all markers) travel if
          they move more than 0.3 m, else the direction from the posterior to the anterior
          pelvis markers (PSIS/sacrum -> ASIS).
        """
        from .markersets import landmark_key

        x = self.xyz.detach().cpu().numpy().astype(np.float64)
        if x.size == 0 or np.isnan(x).all():
            raise ValueError(f"{self.source or 'trial'}: no marker samples to guess an orientation from")
        keys = [landmark_key(n) for n in self.names]
        lm = [k[1] if k else None for k in keys]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            xs = np.sort(x, axis=1)  # NaN last
            n = (~np.isnan(x)).sum(1)  # (T, 3)
            ok_t = n.min(1) >= 2
            if ok_t.any():
                xs, n = xs[ok_t], n[ok_t]
                lo_i, hi_i = np.floor(0.1 * (n - 1)).astype(int), np.ceil(0.9 * (n - 1)).astype(int)
                hi = np.take_along_axis(xs, hi_i[:, None, :], 1)[:, 0]
                lo = np.take_along_axis(xs, lo_i[:, None, :], 1)[:, 0]
                spread = np.median(hi - lo, axis=0)  # (3,) typical within-frame 10-90 % extent
            else:
                spread = np.zeros(3)
            vals = x.reshape(-1, 3)
            vals = vals[~np.isnan(vals).any(1)]
            pos = (vals > -0.05).mean(0)
            neg = (vals < 0.05).mean(0)
        side = np.maximum(pos, neg)
        score = spread * side
        a_up = int(np.argmax(score))
        feet = [i for i, k in enumerate(lm) if k in ("HEEL", "TOE", "ANKLE", "ANKLE_MED", "MT5", "MT1")]
        why = [
            f"up: lab {'xyz'[a_up]} has the largest within-frame marker spread x one-sidedness "
            f"({', '.join(f'{c}={sp:.2f} m x {sd:.2f}' for c, sp, sd in zip('xyz', spread, side))})"
        ]
        others = [i for i in range(self.n_markers) if i not in feet]
        if feet and others:
            f_h = np.nanmean(x[:, feet, a_up])
            o_h = np.nanmean(x[:, others, a_up])
            s_up = 1 if o_h > f_h else -1
            why.append(f"sign: foot markers lie {'below' if s_up > 0 else 'above'} the others along +{'xyz'[a_up]}")
        else:
            s_up = 1 if pos[a_up] >= neg[a_up] else -1
            why.append(f"sign: markers lie mostly on the {'+' if s_up > 0 else '-'} side (no foot markers found)")
        horiz = [i for i in range(3) if i != a_up]
        pelvis = [i for i, k in enumerate(lm) if k in ("ASIS", "PSIS", "SACRUM")]
        idx = pelvis if pelvis else list(range(self.n_markers))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            c = np.nanmean(x[:, idx], axis=1)  # (T, 3)
        ok = ~np.isnan(c).any(1)
        confident = True
        a_fw, s_fw = horiz[0], 1
        travel = c[ok][-1] - c[ok][0] if ok.sum() >= 2 else np.zeros(3)
        h_travel = travel[horiz]
        if np.abs(h_travel).max() > 0.3:
            j = int(np.argmax(np.abs(h_travel)))
            a_fw, s_fw = horiz[j], int(np.sign(h_travel[j]))
            why.append(
                f"forward: {'pelvis' if pelvis else 'mean'} markers travel {h_travel[j]:+.2f} m along {'xyz'[a_fw]}"
            )
        else:
            front = [i for i, k in enumerate(lm) if k == "ASIS"]
            back = [i for i, k in enumerate(lm) if k in ("PSIS", "SACRUM")]
            if front and back:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    v = np.nanmean(np.nanmean(x[:, front], 1) - np.nanmean(x[:, back], 1), 0)
                vh = v[horiz]
                j = int(np.argmax(np.abs(vh)))
                a_fw, s_fw = horiz[j], int(np.sign(vh[j])) or 1
                why.append(
                    f"forward: little travel ({np.abs(h_travel).max():.2f} m); posterior->anterior pelvis "
                    f"markers point {vh[j]:+.2f} m along {'xyz'[a_fw]}"
                )
            else:
                confident = False
                why.append("forward: no travel and no pelvis landmarks; guessed, check it")
        if spread[a_up] < 1.2 * np.sort(spread)[-2]:
            confident = False
            why.append("up axis barely stands out; check it")
        if not 0.3 <= spread[a_up] <= 2.5:
            confident = False
            why.append(f"vertical spread {spread[a_up]:.2f} m is not body-like (units?)")
        guess = OrientationGuess(up=f"{'+' if s_up > 0 else '-'}{'xyz'[a_up]}", forward=f"{'+' if s_fw > 0 else '-'}{'xyz'[a_fw]}")
        guess.reason = "; ".join(why)
        guess.confident = confident
        return guess

    def __repr__(self) -> str:
        return (
            f"MarkerTrial({self.n_frames} frames x {self.n_markers} markers @ {self.rate:g} Hz, "
            f"source={self.source!r})"
        )


class GapInfo(NamedTuple):
    """Missing data of one marker: frames missing, longest run of missing frames, runs."""

    missing: int
    longest: int
    gaps: int


class OrientationGuess(dict):
    """``{"up": ..., "forward": ...}`` for :meth:`MarkerTrial.reoriented` plus ``reason``
    (why) and ``confident`` (whether the cues were clear)."""

    reason: str = ""
    confident: bool = False

    def __repr__(self) -> str:
        return f"OrientationGuess({dict.__repr__(self)}, confident={self.confident}, reason={self.reason!r})"


_AXES = {"x": 0, "y": 1, "z": 2}


def linear_brackets(t: Tensor, tn: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Linear interpolation at times ``tn (K,)`` between samples at increasing times ``t (N,)``
    (``N >= 2``): the samples ``i0, i1 (K,)`` around each time and the weight ``w (K,)`` of
    ``i1``, in ``[0, 1]`` (times outside ``t`` take the end sample's value)."""
    i1 = torch.searchsorted(t, tn, right=True).clamp(1, t.shape[0] - 1)
    i0 = i1 - 1
    return i0, i1, ((tn - t[i0]) / (t[i1] - t[i0])).clamp(0, 1)


def _axis(spec: str, what: str) -> Tensor:
    s = spec.strip().lower()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s not in _AXES:
        raise ValueError(f"{what}={spec!r}: use one of x, y, z with an optional sign, e.g. '+z' or '-y'")
    v = torch.zeros(3, dtype=torch.float64)
    v[_AXES[s]] = sign
    return v


def axes_rotation(up: str = "y", forward: str = "+x") -> Tensor:
    """Rotation ``R (3, 3)`` with ``p_model = R @ p_lab`` for a lab whose ``up`` and
    ``forward`` axes are given (model: X forward, Y up, Z = X x Y to the right); ``det R = 1``."""
    u, f = _axis(up, "up"), _axis(forward, "forward")
    if abs(float(u @ f)) > 0.5:
        raise ValueError(f"up={up!r} and forward={forward!r} must be different lab axes")
    return torch.stack([f, u, torch.linalg.cross(f, u)])
