"""File input/output: the only code that touches files."""
from .osim import load_osim, save_osim

__all__: list[str] = ["load_osim", "save_osim"]
