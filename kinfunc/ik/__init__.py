"""Inverse kinematics."""
from .setup import CoordinateTask, IKSetup

__all__ = ["CoordinateTask", "IKSetup"]
