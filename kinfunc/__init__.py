"""kinfunc: differentiable, functional kinematics for human biomechanics on PyTorch.

Conventions: SI units (metres, radians); Y up, X forward; column vectors; poses are
``(R (..., 3, 3), t (..., 3))`` mapping child coordinates into parent/world; quaternions wxyz;
frame orientations are body-fixed XYZ Euler angles.
"""
from . import filters, functions, ik, io, markersets, models, transforms
from .allocator import retain_freed_memory
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
    "retain_freed_memory",
    "transforms",
    "tree_map",
]
