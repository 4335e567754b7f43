"""A differentiable keypoint layer for training networks: ``q -> keypoints``.

:class:`KeypointLayer` is a ``torch.nn.Module`` wrapping :func:`keypoints`: joint coordinates
``q (..., C)`` (rad / m, ``model.coordinate_names`` order; frames, people, ... as leading
batch dimensions) and optional per-subject scales map to keypoint positions ``(..., K, 3)``
(ground frame, metres) in the order a pose estimator emits them (``layer.keypoint_names``).
A network that predicts ``q`` can then be trained on keypoint losses, with
:func:`joint_limit_penalty` keeping it inside the anatomical ranges::

    layer = kf.nn.KeypointLayer(keypoints="coco17")      # kf.models.full_body(marker_set="coco17")
    x = layer(q)                                         # (..., 17, 3)
    loss = ((x - target) ** 2).sum(-1).mean() + 1e-2 * layer.joint_limit_penalty(q).mean()

Scaling follows the model's (OpenSim ScaleTool) rule, evaluated per batch element: body
``b``'s factor ``s_b = global_scale * scales[..., b, :]`` multiplies the offsets of keypoints
on ``b``, the joint-frame locations on ``b`` and the translation slots of joints whose parent
is ``b`` (see :func:`kinfunc.fk.translation_scales`), so ``keypoints(model, q, scales=S)``
equals ``kinfunc.marker_positions(model.replace(body_scales=S), q)`` for each subject.

Everything is pure tensor algebra: ``torch.func.vmap``/``grad``/``jacrev`` and
``torch.compile`` apply.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import Tensor

from ._pytree import tree_flatten, tree_unflatten
from .fk import local_transforms, marker_positions
from .kernels import compose_chain
from .model import Model
from .models import FULL_BODY_MARKER_SETS, full_body

__all__ = ["KeypointLayer", "keypoints", "joint_limit_penalty", "keypoint_names"]


def keypoint_names(keypoints: str) -> tuple[str, ...]:
    """Names of a keypoint (or marker) set of :func:`kinfunc.models.full_body`, in the order its
    estimator emits them (``"coco17"``, ``"halpe26"``, ``"body25"``, ``"h36m17"``,
    ``"smpl24"``, ``"opencap"``; also ``"cmu"``, ``"pig"``)."""
    if keypoints not in FULL_BODY_MARKER_SETS:
        raise ValueError(f"unknown keypoint set {keypoints!r}; choose one of {', '.join(FULL_BODY_MARKER_SETS)}")
    return full_body(marker_set=keypoints).marker_names


def _scaled_marker_positions(model: Model, q: Tensor, s_body: Tensor) -> Tensor:
    """Markers ``(..., M, 3)`` with per-element total body scales ``s_body (..., B, 3)``
    (``global_scale * body_scales``), through :func:`kinfunc.fk.local_transforms`."""
    topo = model.topology
    R, t = local_transforms(model, q, s_body)
    Rw, tw = compose_chain(topo.parents, R, t)
    mb = list(topo.marker_bodies)
    off = model.marker_offsets * s_body[..., mb, :]  # (..., M, 3)
    return (Rw[..., mb, :, :] @ off[..., None])[..., 0] + tw[..., mb, :]


def keypoints(model: Model, q: Tensor, scales: Optional[Tensor] = None, global_scale: Optional[Tensor] = None) -> Tensor:
    """Keypoint (marker) positions ``(..., K, 3)`` (ground, m; order ``model.marker_names``).

    ``q (..., C)``. ``scales (..., B, 3)``: per-subject body scale factors replacing
    ``model.body_scales``; ``global_scale (...,)``: replacing ``model.global_scale``. The
    leading dimensions of ``q``, ``scales`` and ``global_scale`` broadcast (e.g. ``q (P, T, C)``
    with ``scales (P, 1, B, 3)`` for ``P`` people over ``T`` frames). Without scales this is
    :func:`kinfunc.marker_positions`.
    """
    if scales is None and global_scale is None:
        return marker_positions(model, q)
    B = model.topology.n_bodies
    if scales is None:
        scales = model.body_scales
    elif scales.shape[-2:] != (B, 3):
        raise ValueError(f"scales must be (..., {B}, 3) (bodies x axes); got {tuple(scales.shape)}")
    g = model.global_scale if global_scale is None else torch.as_tensor(global_scale, dtype=scales.dtype, device=scales.device)
    return _scaled_marker_positions(model, q, g[..., None, None] * scales)


def _limit_tensors(model: Model, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(lo, hi, has_lo, has_hi)`` ``(C,)``: the clamped coordinates' finite limits (0 elsewhere)
    and 0/1 masks of which bounds apply."""
    topo = model.topology
    lo, hi, mlo, mhi = [], [], [], []
    for (a, b), cl in zip(topo.coordinate_ranges, topo.coordinate_clamped):
        fa = cl and a > float("-inf")
        fb = cl and b < float("inf")
        lo.append(a if fa else 0.0)
        hi.append(b if fb else 0.0)
        mlo.append(1.0 if fa else 0.0)
        mhi.append(1.0 if fb else 0.0)
    kw = dict(dtype=like.dtype, device=like.device)
    return tuple(torch.tensor(x, **kw) for x in (lo, hi, mlo, mhi))  # type: ignore[return-value]


def _penalty(q: Tensor, lo: Tensor, hi: Tensor, has_lo: Tensor, has_hi: Tensor, margin: float) -> Tensor:
    below = torch.relu(lo + margin - q) * has_lo
    above = torch.relu(q - (hi - margin)) * has_hi
    return (below * below + above * above).sum(-1)


def joint_limit_penalty(model: Model, q: Tensor, margin: float = 0.0) -> Tensor:
    """Squared excess of ``q (..., C)`` beyond the model's clamped coordinate ranges, summed over
    coordinates -> ``(...,)`` (rad^2 / m^2).

    Zero inside ``[lo + margin, hi - margin]`` of every coordinate flagged clamped (the ranges
    IK enforces; unclamped coordinates such as the pelvis' are free), ``(lo + margin - q)^2``
    below and ``(q - hi + margin)^2`` above; continuous first derivative. ``margin`` (rad / m,
    default 0) starts the penalty that far inside the range.
    """
    return _penalty(q, *_limit_tensors(model, q), float(margin))


def _leaf_names(model: Model) -> list[str]:
    """Attribute names for the model's leaves, in pytree order (``parent_location``, ...,
    ``slot_params_0_1`` for tuple-nested ones)."""
    names: list[str] = []

    def walk(prefix: str, x) -> None:
        if isinstance(x, (tuple, list)):
            for i, y in enumerate(x):
                walk(f"{prefix}_{i}", y)
        else:
            names.append(prefix)

    for f in dataclasses.fields(model):
        if f.name != "topology":
            walk(f.name, getattr(model, f.name))
    return names


class KeypointLayer(torch.nn.Module):
    """``q (..., C) -> keypoints (..., K, 3)`` as a module (see :func:`keypoints`).

    ``model``: a :class:`~kinfunc.Model` (default ``kf.models.full_body(marker_set=keypoints)``).
    ``keypoints``: a keypoint-set name of :func:`kinfunc.models.full_body` (the given model is
    restricted to that set's names, in the estimator's order), a sequence of marker names, or
    ``None`` (every marker of ``model``). The model's tensors are buffers (moved and cast by
    ``.to(...)``, saved in ``state_dict``), or parameters with ``learn_model=True`` (e.g. to fit
    segment geometry). ``layer.model`` is the model with the module's current tensors.
    """

    def __init__(
        self,
        model: Optional[Model] = None,
        keypoints: Union[str, Sequence[str], None] = "coco17",
        *,
        learn_model: bool = False,
    ) -> None:
        super().__init__()
        if model is None:
            if not isinstance(keypoints, str):
                raise ValueError("KeypointLayer: without a model, keypoints must name a full_body keypoint set")
            model = full_body(marker_set=keypoints)
        elif keypoints is not None:
            names = keypoint_names(keypoints) if isinstance(keypoints, str) else tuple(keypoints)
            missing = [n for n in names if n not in model.marker_names]
            if missing:
                raise ValueError(
                    f"KeypointLayer: model '{model.topology.name}' has no marker(s) {missing} of "
                    f"{keypoints if isinstance(keypoints, str) else 'the keypoints given'}; build it with that set "
                    "(e.g. kf.models.full_body(marker_set=...)) or pass marker names it has"
                )
            if names != model.marker_names:
                model = model.with_markers(names)
        self.topology = model.topology
        leaves, self._spec = tree_flatten(model)
        self.learn_model = bool(learn_model)
        self._leaf_names = _leaf_names(model)
        assert len(self._leaf_names) == len(leaves)
        for name, x in zip(self._leaf_names, leaves):
            if learn_model:
                self.register_parameter(name, torch.nn.Parameter(x.detach().clone()))
            else:
                self.register_buffer(name, x.detach().clone())
        lo, hi, has_lo, has_hi = _limit_tensors(model, leaves[0])
        self.register_buffer("limit_lo", lo)
        self.register_buffer("limit_hi", hi)
        self.register_buffer("limit_has_lo", has_lo)
        self.register_buffer("limit_has_hi", has_hi)

    @property
    def model(self) -> Model:
        """The model built from the module's current tensors (differentiable when learned)."""
        return tree_unflatten([getattr(self, n) for n in self._leaf_names], self._spec)

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        """Names of the ``K`` keypoints, in output order."""
        return self.topology.marker_names

    @property
    def coordinate_names(self) -> tuple[str, ...]:
        """Names of the ``C`` coordinates of ``q``, in input order."""
        return self.topology.coordinate_names

    def forward(self, q: Tensor, scales: Optional[Tensor] = None, global_scale: Optional[Tensor] = None) -> Tensor:
        """Keypoints ``(..., K, 3)`` (m) at ``q (..., C)``; ``scales (..., B, 3)``,
        ``global_scale (...,)`` per subject (broadcast with ``q``'s leading dimensions)."""
        return keypoints(self.model, q, scales, global_scale)

    def joint_limit_penalty(self, q: Tensor, margin: float = 0.0) -> Tensor:
        """:func:`joint_limit_penalty` of the layer's model: ``q (..., C)`` -> ``(...,)``."""
        return _penalty(q, self.limit_lo, self.limit_hi, self.limit_has_lo, self.limit_has_hi, float(margin))

    def extra_repr(self) -> str:
        t = self.topology
        return f"model='{t.name}', keypoints={t.n_markers}, coordinates={t.n_coordinates}, learn_model={self.learn_model}"
