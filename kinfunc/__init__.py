"""kinfunc: differentiable, functional kinematics for human biomechanics on PyTorch.

Conventions: SI units (metres, radians); Y up, X forward; column vectors; poses are
``(R (..., 3, 3), t (..., 3))`` mapping child coordinates into parent/world; quaternions wxyz;
frame orientations are body-fixed XYZ Euler angles.
"""
from . import allocator, filters, functions, ik, io, markersets, models, nn, transforms  # noqa: F401  (allocator: a submodule, not exported)
from ._pytree import tree_map
from .compiled import CompiledFK, compile_fk
from .fk import Poses, fk, marker_positions
from .model import (
    CoordinateSpec,
    Coupler,
    Dof,
    Joint,
    Model,
    ModelBuilder,
    ModelError,
    Motion,
    Topology,
)
from .trial import DataFileError, MarkerTrial

__version__ = "0.1.0"

__all__ = [
    "CompiledFK",
    "compile_fk",
    "Coupler",
    "DataFileError",
    "CoordinateSpec",
    "Dof",
    "Joint",
    "MarkerTrial",
    "Model",
    "ModelBuilder",
    "ModelError",
    "Motion",
    "Poses",
    "Topology",
    "fk",
    "filters",
    "functions",
    "ik",
    "io",
    "marker_positions",
    "markersets",
    "models",
    "nn",
    "transforms",
    "tree_map",
]


def __getattr__(name: str):
    if name == "retain_freed_memory":  # a process-wide allocator switch, not kinematics
        import warnings

        from . import allocator

        warnings.warn("kinfunc.retain_freed_memory moves to kinfunc.allocator.retain_freed_memory (this alias goes in "
                      "the next release)", DeprecationWarning, stacklevel=2)
        return allocator.retain_freed_memory
    raise AttributeError(f"module 'kinfunc' has no attribute '{name}'")
