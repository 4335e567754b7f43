"""Built-in models."""
from .full_body import MARKER_SETS as FULL_BODY_MARKER_SETS
from .full_body import full_body
from .lower_body import MARKER_SETS, lower_body

__all__ = ["lower_body", "full_body", "MARKER_SETS", "FULL_BODY_MARKER_SETS"]
