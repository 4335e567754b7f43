"""Inverse kinematics."""

__all__: list[str] = []
