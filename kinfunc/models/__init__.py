"""Built-in models."""
from .lower_body import MARKER_SETS, lower_body

__all__ = ["lower_body", "MARKER_SETS"]
