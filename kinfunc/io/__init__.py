"""File input/output: the only code that touches files."""
from .mot import MotionData, MotionFileError, read_mot, read_sto, write_mot, write_sto
from .osim import load_osim, save_osim
from .setup import SetupError, load_ik_setup

__all__: list[str] = [
    "MotionData",
    "MotionFileError",
    "SetupError",
    "load_ik_setup",
    "load_osim",
    "read_mot",
    "read_sto",
    "save_osim",
    "write_mot",
    "write_sto",
]
