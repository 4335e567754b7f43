"""Temporal propagation: frames that end far above their neighbours are restarted from them,
and coordinates the markers do not see in a frame are filled in from the frames that see them.

A solve whose frames are independent (poses only, no smoothness) can leave a frame in a wrong
basin even from a good start (a limb passing a joint limit, a brief marker dropout). Its cost
then stands out against the frames around it, whose poses are usually a good start for it.
:func:`repair` finds such frames (:func:`outlier_frames`), solves each again from the nearest
good frame before it and after it (all of them in one batch), keeps whichever pose is lowest,
and repeats until no frame improves. Every frame's cost can only go down, so whole-trial IK is
never worse than the per-frame solve it started from.

In a frame where the markers that would place a coordinate are missing (a shank with its knee
and ankle points dropped, a hand out of view) the objective is flat along that coordinate and
the solve leaves it wherever the start put it. :func:`unobserved` finds such (frame,
coordinate) pairs from the information the present markers carry about each coordinate, and
:func:`fill_unobserved` sets them from the nearest frames before and after that see the
coordinate (linear in time) and solves those frames again.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor

from ..model import Motion
from .gn import GNOptions, GNResult, _frame_subset, frame_costs, frame_information, solve_gn
from .problem import IKProblem

__all__ = ["fill_unobserved", "frame_rms", "gap_frames", "outlier_frames", "repair", "unobserved"]


def frame_rms(problem: IKProblem, cost: Tensor) -> Tensor:
    """Per-frame weighted RMS marker distance ``(T,)`` (m) from per-frame costs ``(T,)``:
    ``sqrt(cost / sum_m w_m present_tm)`` (NaN where no marker is present)."""
    wsum = (problem.present * problem.sqrt_w**2).sum(-1)
    return torch.where(wsum > 0, (cost.clamp_min(0) / wsum.clamp_min(1e-30)).sqrt(), torch.full_like(cost, float("nan")))


def local_median(e: Tensor, trial_id: Tensor, half_window: int) -> Tensor:
    """Median of ``e (T,)`` over frames ``t - h .. t + h`` of the same trial, itself excluded
    (NaN entries ignored)."""
    T = e.shape[0]
    h = max(int(half_window), 1)
    pad = torch.full((h,), float("nan"), dtype=e.dtype, device=e.device)
    ep = torch.cat((pad, e, pad))
    tp = torch.cat((torch.full((h,), -1, device=e.device), trial_id, torch.full((h,), -1, device=e.device)))
    win = ep.unfold(0, 2 * h + 1, 1)  # (T, 2h + 1)
    same = tp.unfold(0, 2 * h + 1, 1) == trial_id[:, None]
    win = torch.where(same, win, torch.full_like(win, float("nan")))
    win = torch.cat((win[:, :h], win[:, h + 1 :]), 1)
    return torch.nanmedian(win, dim=1).values if T else e


def trial_median(rms: Tensor, trial_id: Tensor) -> Tensor:
    """Median of ``rms (T,)`` over each frame's trial (NaN entries ignored), per frame ``(T,)``."""
    out = torch.zeros_like(rms)
    for k in torch.unique(trial_id).tolist():
        sel = trial_id == k
        v = rms[sel]
        v = v[torch.isfinite(v)]
        out[sel] = v.median() if v.numel() else 0.0
    return out


def outlier_frames(
    rms: Tensor, trial_id: Tensor, half_window: int = 15, ratio: float = 1.5, margin: float = 0.004,
    high_ratio: float = 3.0, high_margin: float = 0.015, med_t: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """Frames whose RMS ``(T,)`` (m) stands out: ``local``, above ``ratio`` times the median of
    the frames around them plus ``margin`` (m) -- a short run; and ``high``, above ``high_ratio``
    times their trial's median and that median plus ``high_margin`` (m) -- also the middle of a
    run longer than the window, where the frames around are as bad (``med_t (T,)``: the trial
    medians when already known). Returns ``(local, high)``, each ``(T,)`` bool."""
    fin = torch.isfinite(rms)
    med = local_median(rms, trial_id, half_window)
    med = torch.where(torch.isfinite(med), med, torch.zeros_like(med))
    med_t = trial_median(rms, trial_id) if med_t is None else med_t
    local = fin & (rms > ratio * med + margin)
    high = fin & (rms > torch.maximum(high_ratio * med_t, med_t + high_margin))
    return local, high


def _nearest_good(good: Tensor, trial_id: Tensor) -> tuple[Tensor, Tensor]:
    """For every frame the nearest good frame at or before it and at or after it, in the same
    trial (``-1`` where there is none)."""
    T = good.shape[0]
    idx = torch.arange(T, device=good.device)
    prev = torch.where(good, idx, torch.full_like(idx, -1)).cummax(0).values
    nxt = torch.where(good, idx, torch.full_like(idx, T)).flip(0).cummin(0).values.flip(0)
    prev = torch.where((prev >= 0) & (trial_id[prev.clamp_min(0)] == trial_id), prev, torch.full_like(prev, -1))
    ok_n = (nxt < T) & (trial_id[nxt.clamp_max(T - 1)] == trial_id)
    nxt = torch.where(ok_n, nxt, torch.full_like(nxt, -1))
    return prev, nxt


@dataclasses.dataclass(frozen=True)
class RepairReport:
    """What :func:`repair` did: ``rounds`` run, ``restarted`` frames tried, ``improved`` frames
    whose cost went down (indices into the problem's frames)."""

    rounds: int = 0
    restarted: tuple[int, ...] = ()
    improved: tuple[int, ...] = ()


def _costs_of(problem: IKProblem, Z: Tensor, solved: Optional[GNResult], who: str) -> tuple[Tensor, Tensor]:
    """Per-frame costs ``(T,)`` and marker positions ``(T, M, 3)`` of an independent-frame
    ``problem`` at ``Z``: those of ``solved`` when it kept them, else one forward pass."""
    if problem.coupled:
        raise ValueError(f"{who}: frames must be independent (no shared parameters, no smoothness)")
    if solved is not None and solved.costs is not None and solved.positions is not None:
        return solved.costs, solved.positions
    return frame_costs(problem, Z)


def _neighbour_better(rms: Tensor, trial_id: Tensor, check: Tensor, ratio: float = 0.9) -> tuple[Tensor, Tensor]:
    """Frames among ``check`` whose neighbour (the frame before or after, same trial) ends with
    an RMS ``rms (T,)`` under ``ratio`` times theirs, and that neighbour. Adjacent frames of a
    smooth motion end within a few per cent of each other; such a step marks the edge of a run
    of frames in another basin (a shoulder turned the other way), closed in on from there."""
    T = rms.shape[0]
    fs, ss = [], []
    for d in (-1, 1):
        nb = check + d
        ok = (nb >= 0) & (nb < T)
        f, nb = check[ok], nb[ok]
        keep = (trial_id.index_select(0, f) == trial_id.index_select(0, nb)) & (
            rms.index_select(0, nb) < ratio * rms.index_select(0, f)
        )
        fs.append(f[keep])
        ss.append(nb[keep])
    return torch.cat(fs), torch.cat(ss)


def repair(
    problem: IKProblem, Z: Tensor, opts: GNOptions = GNOptions(), max_rounds: int = 64, max_iter: int = 20,
    solved: Optional[GNResult] = None, neighbours: bool = True,
) -> tuple[GNResult, RepairReport]:
    """Restart frames of an independent-frame ``problem`` (no shared parameters, no smoothness)
    from their neighbours; ``Z (T, Cf)`` the solved poses. Restarted each round: outlier frames
    (:func:`outlier_frames`) from the nearest good frame before and after them, and frames whose
    neighbour ends far lower (:func:`_neighbour_better`; first all frames, then the neighbours
    of the frames that changed) from that neighbour, so a run of frames in another basin is
    closed in on from its ends (``neighbours=False``: outliers only). A (frame, seed) pair is tried
    once while the seed's pose stays the same (at most ``max_iter`` iterations); a frame keeps
    the result only when it lowers its cost by more than 0.1 %. ``solved``: the solve that gave
    ``Z``, whose per-frame costs and positions are used when it has them. Returns the result
    (poses, total cost, marker positions) and a :class:`RepairReport`."""
    cost, P = _costs_of(problem, Z, solved, "repair")
    T = Z.shape[0]
    tried: set[int] = set()
    improved: set[int] = set()
    pairs: set[tuple[int, int]] = set()  # (frame, seed frame) already tried
    opts = dataclasses.replace(opts, max_iter=min(opts.max_iter, max_iter))
    check = torch.arange(T, device=Z.device)  # frames whose neighbours' poses are tried this round
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        rms = frame_rms(problem, cost)
        med = trial_median(rms, problem.trial_id)
        local, high = outlier_frames(rms, problem.trial_id, med_t=med)
        bad = local | high
        nf, ns = _neighbour_better(rms, problem.trial_id, check if neighbours else check[:0])
        frames, seeds = [nf], [ns]
        if bool(bad.any()):
            prev, nxt = _nearest_good(~bad, problem.trial_id)
            bi = torch.nonzero(bad).flatten()
            for src in (prev, nxt):
                sd = src.index_select(0, bi)
                frames.append(bi[sd >= 0])
                seeds.append(sd[sd >= 0])
        fr, sd = torch.cat(frames), torch.cat(seeds)
        new = torch.tensor([p not in pairs for p in zip(fr.tolist(), sd.tolist())], dtype=torch.bool, device=fr.device)
        fr, sd = fr[new], sd[new]
        if fr.numel() == 0:
            rounds -= 1
            break
        pairs |= set(zip(fr.tolist(), sd.tolist()))
        tried |= set(fr.tolist())
        sub = _frame_subset(problem, fr)
        res = solve_gn(sub, Z.index_select(0, sd), None, opts)
        c_new, P_new = frame_costs(sub, res.Z)
        # best candidate per frame: scatter-min over the candidates, then compare with the current cost
        best = torch.full_like(cost, float("inf")).scatter_reduce(0, fr, c_new, reduce="amin")
        better = best < cost * (1 - 1e-3)
        if not bool(better.any()):
            break
        pick = better.index_select(0, fr) & (c_new == best.index_select(0, fr))
        # one candidate per frame (the first of equals): the lowest candidate position per frame
        n = fr.numel()
        cand = torch.where(pick, torch.arange(n, device=fr.device), torch.full_like(fr, n))
        first = torch.full_like(cost, n, dtype=fr.dtype).scatter_reduce(0, fr, cand, reduce="amin")
        k = first[first < n]
        tgt = fr.index_select(0, k)
        Z = Z.index_copy(0, tgt, res.Z.index_select(0, k))
        cost = cost.index_copy(0, tgt, c_new.index_select(0, k))
        P = P.index_copy(0, tgt, P_new.index_select(0, k))
        improved |= set(tgt.tolist())
        # next round: the neighbours of the frames that changed; pairs seeded by them may run again
        moved = set(tgt.tolist())
        pairs = {p for p in pairs if p[1] not in moved}
        check = torch.unique(torch.cat((tgt - 1, tgt + 1)).clamp(0, T - 1))
    report = RepairReport(rounds, tuple(sorted(tried)), tuple(sorted(improved)))
    return GNResult(Z, None, float(cost.sum()), 0, True, [float(cost.sum())], P, cost), report


def unobserved(
    problem: IKProblem, Z: Tensor, frames: Optional[Tensor] = None, ratio: float = 1e-2, floor: float = 1e-6
) -> Tensor:
    """``(T, Cf)`` bool: the coordinates the present markers barely see in a frame at the poses
    ``Z (T, Cf)``: the information they carry about it (:func:`~kinfunc.ik.gn.frame_information`)
    under ``ratio`` times what all the problem's markers would carry at that pose (the markers
    that place it are missing: a lever arm under a tenth of its full one), or under ``floor``
    (m^2/rad^2: 1 mm per radian; also with every marker present: a coordinate these markers
    never see). ``frames``: evaluate only these (the others are False); default all."""
    T, Cf = Z.shape
    mask = torch.zeros(T, Cf, dtype=torch.bool, device=Z.device)
    idx = torch.arange(T, device=Z.device) if frames is None else frames
    if idx.numel() == 0:
        return mask
    with torch.no_grad():
        sub = _frame_subset(problem, idx)
        Zs = Z.index_select(0, idx)
        have = frame_information(sub, Zs)
        full = frame_information(dataclasses.replace(sub, present=torch.ones_like(sub.present)), Zs)
    return mask.index_copy(0, idx, have < torch.clamp(ratio * full, min=floor))


def gap_frames(problem: IKProblem) -> Tensor:
    """Indices of the frames where a marker of the fit is missing (or has confidence 0)."""
    used = problem.sqrt_w > 0
    return torch.nonzero(((problem.present <= 0) & used).any(-1)).flatten()


def _interpolate(z: Tensor, seen: Tensor, trial_id: Tensor, rotational: bool) -> Tensor:
    """``z (T,)`` with the frames not ``seen`` set linearly in frame index from the nearest
    seen frames of the same trial before and after (the nearer one alone at a trial's ends;
    unchanged where the trial has none). Angles take the shorter way round."""
    prev, nxt = _nearest_good(seen, trial_id)
    idx = torch.arange(z.shape[0], device=z.device)
    zp, zn = z.index_select(0, prev.clamp_min(0)), z.index_select(0, nxt.clamp_min(0))
    d = zn - zp
    if rotational:
        d = torch.remainder(d + torch.pi, 2 * torch.pi) - torch.pi
    span = (nxt - prev).clamp_min(1).to(z.dtype)
    both = zp + d * (idx - prev).to(z.dtype) / span
    out = torch.where((prev >= 0) & (nxt >= 0), both, torch.where(prev >= 0, zp, torch.where(nxt >= 0, zn, z)))
    return torch.where(seen, z, out)


def fill_unobserved(
    problem: IKProblem, Z: Tensor, opts: GNOptions = GNOptions(), max_iter: int = 20, solved: Optional[GNResult] = None,
    tolerance: float = 0.1,
) -> tuple[GNResult, Tensor]:
    """Coordinates of an independent-frame ``problem`` that the present markers do not see in
    a frame with missing markers (:func:`unobserved`), set from the frames that see them
    (linear in time within the trial), then those frames solved again from there (at most
    ``max_iter`` iterations); a frame keeps the new pose unless its cost rises by more than
    ``tolerance`` (10 %: what the markers barely see moves the cost by noise, a few per cent
    where the start left a limb straight and its neighbours bent it). ``Z (T, Cf)``: the solved
    poses (``solved``: their solve, whose costs and positions are used). Returns the
    result and the ``(T, Cf)`` mask of what was unobserved (frames without a gap: False)."""
    cost, P = _costs_of(problem, Z, solved, "fill_unobserved")
    result = GNResult(Z, None, float(cost.sum()), 0, True, [float(cost.sum())], P, cost)
    gaps = gap_frames(problem)
    if gaps.numel() == 0:  # every marker in every frame: nothing to fill
        return result, torch.zeros(Z.shape, dtype=torch.bool, device=Z.device)
    mask = unobserved(problem, Z, gaps)
    seen = ~mask
    # a trial with no frame that sees a coordinate leaves it alone
    fillable = torch.zeros_like(mask)
    for k in torch.unique(problem.trial_id).tolist():
        sel = problem.trial_id == k
        fillable[sel] = mask[sel] & seen[sel].any(0, keepdim=True)
    cols = torch.nonzero(fillable.any(0)).flatten().tolist()
    if not cols:
        return result, mask
    topo = problem.model.topology
    Zf = Z.clone()
    for c in cols:
        rot = topo.coordinate_motion[int(problem.free_index[c])] is Motion.ROTATIONAL
        Zf[:, c] = _interpolate(Z[:, c], seen[:, c] | ~fillable[:, c], problem.trial_id, rot)
    fr = torch.nonzero(fillable.any(1)).flatten()
    sub = _frame_subset(problem, fr)
    res = solve_gn(sub, Zf.index_select(0, fr), None, dataclasses.replace(opts, max_iter=min(opts.max_iter, max_iter)))
    c_new, P_new = frame_costs(sub, res.Z)
    keep = c_new <= cost.index_select(0, fr) * (1 + tolerance) + 1e-12
    tgt = fr[keep]
    Z = Z.index_copy(0, tgt, res.Z[keep])
    cost = cost.index_copy(0, tgt, c_new[keep])
    P = P.index_copy(0, tgt, P_new[keep])
    return GNResult(Z, None, float(cost.sum()), 0, True, [float(cost.sum())], P, cost), mask
