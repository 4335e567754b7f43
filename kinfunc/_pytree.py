"""The one place that touches ``torch.utils._pytree``.

Models are frozen dataclasses whose tensor fields are pytree leaves and whose static
structure (a hashable :class:`~kinfunc.model.Topology`) travels as auxiliary data, so
``torch.func`` transforms and ``torch.compile`` see a model as a bundle of tensors.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

import torch.utils._pytree as _pt

T = TypeVar("T")

__all__ = ["register_static_dataclass", "tree_map", "tree_leaves", "tree_flatten", "tree_unflatten"]


def register_static_dataclass(cls: type[T], static_fields: tuple[str, ...]) -> type[T]:
    """Register a frozen dataclass as a pytree node.

    Fields named in ``static_fields`` go into the (hashable) aux data; every other field is
    a child (a tensor or a nested tuple of tensors).
    """
    names = tuple(f.name for f in dataclasses.fields(cls))
    children = tuple(n for n in names if n not in static_fields)

    def flatten(obj: Any):
        return [getattr(obj, n) for n in children], tuple(getattr(obj, n) for n in static_fields)

    def unflatten(values, aux):
        kw = dict(zip(children, values))
        kw.update(zip(static_fields, aux))
        return cls(**kw)

    def flatten_with_keys(obj: Any):
        return [(_pt.GetAttrKey(n), getattr(obj, n)) for n in children], tuple(
            getattr(obj, n) for n in static_fields
        )

    _pt.register_pytree_node(
        cls,
        flatten,
        unflatten,
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        flatten_with_keys_fn=flatten_with_keys,
    )
    return cls


def tree_map(fn: Callable[[Any], Any], tree: T) -> T:
    """Apply ``fn`` to every leaf (tensor) of ``tree`` and rebuild it."""
    return _pt.tree_map(fn, tree)


def tree_leaves(tree: Any) -> list[Any]:
    """All leaves (tensors) of ``tree`` in a fixed order."""
    return _pt.tree_leaves(tree)


def tree_flatten(tree: Any):
    """``(leaves, spec)`` of ``tree``."""
    return _pt.tree_flatten(tree)


def tree_unflatten(leaves: list[Any], spec: Any):
    """Inverse of :func:`tree_flatten`."""
    return _pt.tree_unflatten(leaves, spec)
