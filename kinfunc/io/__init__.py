"""File input/output: the only code that touches files."""

from .urdf import UrdfError, load_urdf, save_urdf

__all__: list[str] = ["UrdfError", "load_urdf", "save_urdf"]
