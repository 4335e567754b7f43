"""File input/output: the only code that touches files."""
from ..trial import DataFileError, DataFileWarning
from .trc import load_trc, write_trc

__all__: list[str] = ["DataFileError", "DataFileWarning", "load_trc", "write_trc"]
