"""File input/output: the only code that touches files."""
from ..trial import DataFileError, DataFileWarning
from .c3d import load_c3d, write_c3d
from .convert import convert, load_markers
from .trc import load_trc, write_trc

__all__: list[str] = [
    "DataFileError",
    "DataFileWarning",
    "convert",
    "load_c3d",
    "load_markers",
    "load_trc",
    "write_c3d",
    "write_trc",
]
