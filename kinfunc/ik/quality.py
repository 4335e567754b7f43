"""Fit-quality report: which frames and markers of an IK result may be wrong, and why.

Computed for every result from its marker errors (no extra solve):

* **doubtful frames**: a frame whose RMS marker error stands out from the frames around it
  (above 1.5 x their median + 4 mm: a wrong basin, a mislabelled marker), or is high for the
  whole trial (above 3 x the trial's median RMS and 15 mm above it); after a robust solve the
  RMS leaves out the samples it down-weighted below 0.1 (those are listed as marker issues);
* **doubtful markers**: a marker whose RMS error over the trial is far above the others'
  (above 2.5 x their median and 10 mm above it: misplaced, or its model position is wrong);
* **marker issues**: runs of frames in which one marker's error is far above the trial's
  typical error (5 x the median error and at least 15 mm), each with a reason: *swapped with X*
  (its measured position sits on the model position of its left/right partner X, and X's on
  its own), *displaced by (dx, dy, dz) mm* (a steady offset for 5 frames or more: a marker
  that slipped or was re-attached), or *outlier* (anything else: a spike, a mislabel). With
  ``robust=True`` these samples were also down-weighted (their mean robust weight is given).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

import torch
from torch import Tensor

from .repair import local_median, outlier_frames

__all__ = ["FitQuality", "MarkerIssue", "assess", "partner_name", "issue_threshold"]


@dataclasses.dataclass(frozen=True)
class MarkerIssue:
    """One marker over one run of frames (``first``..``last``, inclusive, trial frame indices;
    ``t0``/``t1`` their times, s) whose error is far above the trial's typical error."""

    marker: str
    first: int
    last: int
    t0: float
    t1: float
    max_error: float  # m
    reason: str
    weight: float = 1.0  # mean robust weight over the run (1 = not down-weighted)

    def line(self) -> str:
        w = f", down-weighted to {self.weight:.2f}" if self.weight < 0.999 else ""
        return (
            f"{self.marker}: frames {self.first}-{self.last} ({self.t0:.2f}-{self.t1:.2f} s), "
            f"max error {1e3 * self.max_error:.0f} mm: {self.reason}{w}"
        )


@dataclasses.dataclass(frozen=True)
class FitQuality:
    """Flags on one trial's IK result.

    ``frame_flags (T,)`` bool: doubtful frames; ``frame_reasons``: (frame, reason) for each;
    ``marker_flags (M,)`` bool: doubtful markers (result's ``marker_names`` order);
    ``restarted``: frames restarted from their neighbours during the solve; ``issues``: the
    :class:`MarkerIssue` runs; ``robust``: whether the solve down-weighted them;
    ``coordinate_names`` / ``unobserved (T, Cf)`` bool: the free coordinates, and in which frames
    the present markers barely saw each (:func:`kinfunc.ik.repair.unobserved`; set from the
    frames around that saw it, when the solve had no smoothness). A coordinate seen in some
    frames and not in others makes the fit doubtful there (``ok`` is False); one seen in no
    frame (a wrist's rotation from keypoints) is listed as ``unseen`` and left at its start.
    """

    frame_flags: Tensor
    frame_reasons: tuple[tuple[int, str], ...]
    marker_flags: Tensor
    marker_names: tuple[str, ...]
    restarted: tuple[int, ...] = ()
    issues: tuple[MarkerIssue, ...] = ()
    robust: bool = False
    coordinate_names: tuple[str, ...] = ()
    unobserved: Optional[Tensor] = None

    @property
    def unseen(self) -> tuple[str, ...]:
        """Free coordinates the markers saw in no frame (left at their start values)."""
        if self.unobserved is None or not self.unobserved.shape[0]:
            return ()
        every = self.unobserved.all(0).tolist()
        return tuple(n for n, e in zip(self.coordinate_names, every) if e)

    @property
    def partly_unseen(self) -> tuple[tuple[str, int], ...]:
        """``(coordinate, frames)`` for the free coordinates the markers did not see in some
        frames (but did in others)."""
        if self.unobserved is None or not self.unobserved.shape[0]:
            return ()
        n = self.unobserved.sum(0).tolist()
        T = self.unobserved.shape[0]
        return tuple((c, k) for c, k in zip(self.coordinate_names, n) if 0 < k < T)

    @property
    def ok(self) -> bool:
        """No doubtful frame, no doubtful marker, no marker issue and no coordinate the markers
        saw in some frames but not in others."""
        return not (bool(self.frame_flags.any()) or bool(self.marker_flags.any()) or self.issues or self.partly_unseen)

    def summary(self) -> str:
        """One line: counts of flagged frames, markers, issues and unseen coordinates."""
        nf, nm = int(self.frame_flags.sum()), int(self.marker_flags.sum())
        unseen = f"; not seen by the markers: {', '.join(self.unseen)}" if self.unseen else ""
        if self.ok:
            return f"fit quality: no doubtful frame or marker ({len(self.restarted)} frames restarted from neighbours){unseen}"
        bad = [n for n, f in zip(self.marker_names, self.marker_flags.tolist()) if f]
        part = self.partly_unseen
        gaps = (f"; {len(part)} coordinate(s) unseen in some frames ("
                + ", ".join(f"{c} {k}" for c, k in part[:6]) + (", ..." if len(part) > 6 else "") + ")") if part else ""
        return (
            f"fit quality: {nf} doubtful frame(s), {nm} doubtful marker(s){' (' + ', '.join(bad) + ')' if bad else ''}, "
            f"{len(self.issues)} marker issue(s){' down-weighted' if self.robust and self.issues else ''}; "
            f"{len(self.restarted)} frames restarted from neighbours{gaps}{unseen}"
        )

    def lines(self, time: Optional[Tensor] = None, max_lines: int = 20) -> list[str]:
        """Human-readable report lines (frames grouped into runs)."""
        out = [self.summary()]
        runs = _runs([f for f, _ in self.frame_reasons])
        reasons = dict(self.frame_reasons)
        for a, b in runs[:max_lines]:
            when = f" ({float(time[a]):.2f}-{float(time[b]):.2f} s)" if time is not None else ""
            out.append(f"  doubtful frames {a}-{b}{when}: {reasons[a]}")
        if len(runs) > max_lines:
            out.append(f"  ... and {len(runs) - max_lines} more runs of doubtful frames")
        for iss in self.issues[:max_lines]:
            out.append("  marker " + iss.line())
        if len(self.issues) > max_lines:
            out.append(f"  ... and {len(self.issues) - max_lines} more marker issues")
        part = self.partly_unseen
        for c, _ in part[:max_lines]:
            frames = torch.nonzero(self.unobserved[:, self.coordinate_names.index(c)]).flatten().tolist()
            rr = _runs(frames, join=0)
            when = ", ".join(
                f"{a}-{b}" + (f" ({float(time[a]):.2f}-{float(time[b]):.2f} s)" if time is not None else "") for a, b in rr[:4]
            ) + (f", ... ({len(rr)} runs)" if len(rr) > 4 else "")
            out.append(f"  coordinate {c}: not seen by the markers in {len(frames)} frame(s) {when}; "
                       "set from the frames around that saw it (or by smoothness), not measured")
        if len(part) > max_lines:
            out.append(f"  ... and {len(part) - max_lines} more coordinates unseen in some frames")
        return out


def partner_name(name: str, names: Sequence[str]) -> Optional[str]:
    """The left/right partner of a marker name among ``names`` (``RKNE`` <-> ``LKNE``,
    ``R.Knee`` <-> ``L.Knee``, ``knee_r`` <-> ``knee_l``), or ``None``."""
    cands = []
    for pat, rep in (
        (r"^R", "L"), (r"^L", "R"), (r"^r", "l"), (r"^l", "r"),
        (r"_r$", "_l"), (r"_l$", "_r"), (r"_R$", "_L"), (r"_L$", "_R"),
        (r"(?<=[._])R(?=[._])", "L"), (r"(?<=[._])L(?=[._])", "R"),
    ):
        if re.search(pat, name):
            cands.append(re.sub(pat, rep, name, count=1))
    for c in cands:
        if c != name and c in names:
            return c
    return None


def _runs(frames: Sequence[int], join: int = 2) -> list[tuple[int, int]]:
    """Sorted frame indices grouped into runs (gaps of up to ``join`` frames joined)."""
    out: list[list[int]] = []
    for f in sorted(frames):
        if out and f - out[-1][1] <= join + 1:
            out[-1][1] = f
        else:
            out.append([f, f])
    return [(a, b) for a, b in out]


def issue_threshold(err: Tensor) -> float:
    """Marker error (m) above which a sample counts as a marker issue: 5 x the median of the
    present samples' errors, at least 15 mm."""
    e = err[torch.isfinite(err)]
    med = float(e.median()) if e.numel() else 0.0
    return max(5.0 * med, 0.015)


def assess(
    marker_names: Sequence[str],
    err: Tensor,
    rms: Tensor,
    X: Tensor,
    P: Tensor,
    present: Tensor,
    time: Tensor,
    restarted: Sequence[int] = (),
    robust_weight: Optional[Tensor] = None,
    coordinate_names: Sequence[str] = (),
    unobserved: Optional[Tensor] = None,
) -> FitQuality:
    """The :class:`FitQuality` of one trial: ``err (T, M)`` marker errors (m, NaN where
    missing), ``rms (T,)`` per-frame RMS (m), ``X (T, M, 3)`` measured and ``P (T, M, 3)`` model
    markers (m), ``present (T, M)`` bool, ``time (T,)`` s, ``restarted`` frame indices,
    ``robust_weight (T, M)`` the robust weights of the solve (``None``: not robust),
    ``coordinate_names`` / ``unobserved (T, Cf)``: the free coordinates and where the markers
    did not see them."""
    T, M = err.shape
    names = tuple(marker_names)
    # --- frames (with a robust solve: without the samples it set aside, which are reported below)
    if robust_weight is not None:
        kept = present & (robust_weight >= 0.1)
        e2k = torch.where(kept, err * err, torch.zeros_like(err))
        nk = kept.sum(-1)
        rms = torch.where(nk > 0, (e2k.sum(-1) / nk.clamp_min(1)).sqrt(), torch.full_like(rms, float("nan")))
    tid = torch.zeros(T, dtype=torch.long, device=rms.device)
    local, high = outlier_frames(rms, tid)  # the frames the solve's restarts also go after
    med_local = local_median(rms, tid, 15)
    med_local = torch.where(torch.isfinite(med_local), med_local, torch.zeros_like(med_local))
    fin = torch.isfinite(rms)
    med_all = float(rms[fin].median()) if bool(fin.any()) else 0.0
    n_present = present.sum(-1)
    typical = float(n_present.double().median()) if T else 0.0
    # no data at all, or under 3 markers where frames usually have more (a body needs 3 points)
    few = (n_present == 0) | ((n_present < 3) & (typical >= 3))
    reasons = []
    for f in torch.nonzero(local | high | few).flatten().tolist():
        r = []
        if bool(few[f]):
            k = int(n_present[f])
            r.append("no marker data: pose carried over from the start or bridged by smoothness, not measured" if k == 0
                     else f"only {k} marker{'s' if k > 1 else ''}: pose not determined by the data")
        if bool(local[f]):
            r.append(f"RMS {1e3 * float(rms[f]):.0f} mm against {1e3 * float(med_local[f]):.0f} mm around it")
        if bool(high[f]):
            r.append(f"RMS {1e3 * float(rms[f]):.0f} mm, trial median {1e3 * med_all:.0f} mm")
        reasons.append((f, "; ".join(r)))
    # --- markers over the trial
    e2 = torch.where(present, err * err, torch.zeros_like(err))
    cnt = present.sum(0)
    rms_m = torch.where(cnt > 0, (e2.sum(0) / cnt.clamp_min(1)).sqrt(), torch.full_like(err[0], float("nan")))
    fm = torch.isfinite(rms_m)
    med_m = float(rms_m[fm].median()) if bool(fm.any()) else 0.0
    marker_flags = fm & (rms_m > max(2.5 * med_m, med_m + 0.010))
    # --- marker issues
    thr = issue_threshold(err)
    big = present & (torch.nan_to_num(err, nan=0.0) > thr)
    issues = []
    tt = time.tolist()
    for m in torch.nonzero(big.any(0)).flatten().tolist():
        frames = torch.nonzero(big[:, m]).flatten().tolist()
        partner = partner_name(names[m], names)
        pi = names.index(partner) if partner else None
        for a, b in _runs(frames):
            sl = slice(a, b + 1)
            sel = big[sl, m]
            mx = float(torch.nan_to_num(err[sl, m], nan=0.0).max())
            reason = "outlier"
            d = (X[sl, m] - P[sl, m])[sel]  # (n, 3) error vectors of the flagged samples
            if pi is not None:
                ok = present[sl, m] & present[sl, pi] & sel
                if bool(ok.any()):
                    da = torch.linalg.vector_norm(X[sl, m] - P[sl, pi], dim=-1)[ok]
                    db = torch.linalg.vector_norm(X[sl, pi] - P[sl, m], dim=-1)[ok]
                    if float(da.median()) < thr and float(db.median()) < thr:
                        reason = f"swapped with {partner}"
            if reason == "outlier" and d.shape[0] >= 5:
                mean = d.mean(0)
                if float(d.std(0).norm()) < 0.3 * float(mean.norm()):
                    reason = "displaced by ({:.0f}, {:.0f}, {:.0f}) mm".format(*(1e3 * mean).tolist())
            w = 1.0
            if robust_weight is not None:
                w = float(robust_weight[sl, m][sel].mean())
            issues.append(MarkerIssue(names[m], a, b, tt[a], tt[b], mx, reason, w))
    issues.sort(key=lambda i: (i.first, i.marker))
    return FitQuality(
        frame_flags=local | high | few,
        frame_reasons=tuple(reasons),
        marker_flags=marker_flags,
        marker_names=names,
        restarted=tuple(restarted),
        issues=tuple(issues),
        robust=robust_weight is not None,
        coordinate_names=tuple(coordinate_names),
        unobserved=unobserved,
    )
