"""XML parsing with errors that name the file (shared by the .osim, IK setup and URDF readers)."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def parse_xml(path: PathLike, error: type[Exception]) -> ET.Element:
    """Root element of the XML file ``path``; a missing or malformed file raises ``error``
    with the file name and the parser's message."""
    p = os.fspath(path)
    try:
        return ET.parse(p).getroot()
    except FileNotFoundError:
        raise error(f"{p}: file not found") from None
    except ET.ParseError as e:
        raise error(f"{p}: not well-formed XML ({e}); fix or re-export the file") from None
