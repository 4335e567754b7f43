"""File input/output: the only code that touches files."""
from ..trial import DataFileError, DataFileWarning
from .c3d import load_c3d, write_c3d
from .convert import convert, load_markers
from .model_json import ModelFileError, load_model, save_model
from .keypoints import load_keypoints
from .mot import MotionData, MotionFileError, read_coordinate_table, read_mot, read_sto, write_mot, write_sto
from .osim import load_osim, save_osim
from .setup import SetupError, load_ik_setup
from .trc import load_trc, write_trc
from .urdf import UrdfError, load_urdf, save_urdf

__all__: list[str] = [
    "DataFileError",
    "DataFileWarning",
    "ModelFileError",
    "MotionData",
    "MotionFileError",
    "SetupError",
    "UrdfError",
    "convert",
    "load_c3d",
    "load_ik_setup",
    "load_keypoints",
    "load_markers",
    "load_model",
    "load_osim",
    "load_trc",
    "load_urdf",
    "read_coordinate_table",
    "read_mot",
    "read_sto",
    "save_model",
    "save_osim",
    "save_urdf",
    "write_c3d",
    "write_mot",
    "write_sto",
    "write_trc",
]
