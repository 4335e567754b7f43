"""Values derived from a model's joint tensors, kept for the next call with the same tensors.

Many trials are solved with one model, and a model converted to its own dtype or restricted to
some markers keeps the same joint tensor objects (:meth:`kinfunc.Model.joint_leaves`). What is
derived from them (kinematic constants, the root joint's closed form) is therefore kept for the
last few sets, keyed on the deriving object and on the identity and version of every joint
tensor, so an in-place change or a new tensor means a new value. Nothing is kept while an
autograd graph through those tensors is being recorded (the value must carry it) or for
inference-mode tensors (whose versions are not tracked).
"""

from __future__ import annotations

import collections
import weakref
from typing import Any, Callable, TypeVar

import torch

from .model import Model

__all__ = ["cached_on_joints"]

V = TypeVar("V")
_SIZE = 64  # entries are small; a solve keeps ~10 per model and dtype (plans per tree level, closed-form tables)
# key -> (owner ref, joint tensor refs, value)
_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()


def cached_on_joints(owner: Any, model: Model, compute: Callable[[], V]) -> V:
    """``compute()``, or the value it gave ``owner`` (any object that can be weakly referenced,
    e.g. a plan or a function) for the same joint tensors of ``model`` in the same grad mode."""
    leaves = model.joint_leaves()
    if any(t.is_inference() for t in leaves) or (torch.is_grad_enabled() and any(t.requires_grad for t in leaves)):
        return compute()
    key = (id(owner), torch.is_inference_mode_enabled(), tuple((id(t), t._version) for t in leaves))
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is owner and all(r() is t for r, t in zip(hit[1], leaves)):
        _CACHE.move_to_end(key)
        return hit[2]
    value = compute()
    # entries whose tensors are gone (a model converted for one solve) can never be hit again
    for k in [k for k, (o, refs, _) in _CACHE.items() if o() is None or any(r() is None for r in refs)]:
        del _CACHE[k]
    _CACHE[key] = (weakref.ref(owner), [weakref.ref(t) for t in leaves], value)
    while len(_CACHE) > _SIZE:
        _CACHE.popitem(last=False)
    return value
