"""Chained-transform kernels, shipped as ``kinfunc.kernels``.

``compose_chain(parents, R_local, t_local)`` composes joint-local poses down a tree into world
poses. This package holds the pure-torch twin (runs everywhere, reference for the others); a
Triton kernel for CUDA tensors dispatches through the same entry point when available.
"""
from .chain import compose_chain, compose_chain_reference, tree_levels

__all__ = ["compose_chain", "compose_chain_reference", "tree_levels"]
