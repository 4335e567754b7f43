"""The one level schedule every forward pass reads (kinfunc.tree)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinfunc.tree import tree_schedule

from .strategies import random_model


@st.composite
def parent_tuples(draw, max_bodies=12):
    n = draw(st.integers(1, max_bodies))
    return tuple(draw(st.integers(-1, b - 1)) for b in range(n))


@settings(max_examples=200, deadline=None)
@given(parent_tuples())
def test_schedule_levels_orders_and_ancestors(parents):
    s = tree_schedule(parents)
    B = len(parents)
    assert sorted(s.order) == list(range(B))
    assert all(s.order[s.position[b]] == b for b in range(B))
    for k, lvl in enumerate(s.levels):
        assert list(lvl) == sorted(lvl) and lvl == s.order[s.level_start[k]: s.level_start[k] + len(lvl)]
        for b, pp, pin in zip(lvl, s.parent_position[k], s.parent_in_level[k]):
            p = parents[b]
            assert s.depth[b] == k
            if p < 0:
                assert k == 0 and pp == pin == -1
            else:
                assert s.depth[p] == k - 1 and s.order[pp] == p and pin == pp - s.level_start[k - 1]
    for b in range(B):  # ancestors: walk up by hand
        up, x = set(), b
        while x >= 0:
            up.add(x)
            x = parents[x]
        assert {a for a in range(B) if s.ancestors[b][a]} == up
        assert set(s.children[b]) == {c for c in range(B) if parents[c] == b}


@settings(max_examples=20, deadline=None)
@given(random_model())
def test_models_carry_their_schedule(model):
    topo = model.topology
    assert topo.schedule is tree_schedule(topo.parents)
    assert topo.levels == topo.schedule.levels


def test_unordered_parents_are_refused():
    with pytest.raises(ValueError, match="body 1 has parent 1"):
        tree_schedule((-1, 1))
