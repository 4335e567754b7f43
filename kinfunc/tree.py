"""The static schedule of a kinematic tree: the one place that computes depths and levels.

Every forward pass composes joint transforms level by level down the tree (one batched product
per level; a body's parent always lies in the level above). fk's chain, the compiled forward
passes, the IK Jacobian plan, the segment start and the Triton kernel all read this schedule;
none computes its own. It depends only on the parent tuple (no tensors), and is made once per
distinct tree.
"""
from __future__ import annotations

import dataclasses
import functools

__all__ = ["TreeSchedule", "tree_schedule"]


@dataclasses.dataclass(frozen=True)
class TreeSchedule:
    """Level structure of a tree of ``B`` bodies (``parents[b] < b``, -1 = ground).

    * ``depth (B,)``: 0 for children of ground.
    * ``levels``: bodies of each depth, ascending.
    * ``order (B,)``: bodies level by level (level order); ``position (B,)``: each body's place
      in it (the inverse permutation); ``level_start``: where each level begins in it.
    * ``parent_position``: per level, each body's parent's place in level order (-1 = ground);
      ``parent_in_level``: the same counted from the start of the level above (-1 = ground).
    * ``ancestors (B, B)``: ``ancestors[b][a]`` is True when ``a`` is ``b`` or above it.
    * ``children``: each body's children.
    """

    parents: tuple[int, ...]
    depth: tuple[int, ...]
    levels: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    position: tuple[int, ...]
    level_start: tuple[int, ...]
    parent_position: tuple[tuple[int, ...], ...]
    parent_in_level: tuple[tuple[int, ...], ...]
    ancestors: tuple[tuple[bool, ...], ...]
    children: tuple[tuple[int, ...], ...]

    @property
    def identity_order(self) -> bool:
        """Whether level order is body order (no permutation needed)."""
        return self.order == tuple(range(len(self.order)))


@functools.lru_cache(maxsize=None)
def tree_schedule(parents: tuple[int, ...]) -> TreeSchedule:
    """The :class:`TreeSchedule` of ``parents`` (a tuple; ``ValueError`` unless ``parents[b] < b``)."""
    parents = tuple(int(p) for p in parents)
    B = len(parents)
    depth: list[int] = []
    for b, p in enumerate(parents):
        if p >= b or p < -1:
            raise ValueError(f"parents must be topologically ordered (parent < child, -1 = ground); body {b} has parent {p}")
        depth.append(0 if p < 0 else depth[p] + 1)
    levels = tuple(tuple(b for b in range(B) if depth[b] == d) for d in range(max(depth, default=-1) + 1))
    order = tuple(b for lvl in levels for b in lvl)
    position = [0] * B
    for k, b in enumerate(order):
        position[b] = k
    starts, s = [], 0
    for lvl in levels:
        starts.append(s)
        s += len(lvl)
    ppos = tuple(tuple(position[parents[b]] if parents[b] >= 0 else -1 for b in lvl) for lvl in levels)
    pin = tuple(tuple(-1 if p < 0 else p - starts[k - 1] for p in pp) for k, pp in enumerate(ppos))
    anc = []
    for b in range(B):
        row = [False] * B
        x = b
        while x >= 0:
            row[x] = True
            x = parents[x]
        anc.append(tuple(row))
    children = tuple(tuple(c for c in range(B) if parents[c] == b) for b in range(B))
    return TreeSchedule(parents, tuple(depth), levels, order, tuple(position), tuple(starts), ppos, pin, tuple(anc),
                        children)
