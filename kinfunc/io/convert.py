"""Marker-file conversion by extension: C3D -> TRC, TRC -> TRC, TRC/C3D -> C3D."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..trial import MarkerTrial
from ._markerio import PathLike

__all__ = ["convert", "load_markers"]


def load_markers(path: PathLike, **kwargs: Any) -> MarkerTrial:
    """:func:`load_c3d`, :func:`load_trc` or (``.npy``/``.npz``/``.json`` keypoints)
    :func:`load_keypoints` by file extension (any case)."""
    from .c3d import load_c3d
    from .trc import load_trc

    ext = Path(os.fspath(path)).suffix.lower()
    if ext == ".c3d":
        return load_c3d(path, **kwargs)
    if ext == ".trc":
        return load_trc(path, **kwargs)
    if ext in (".npy", ".npz", ".json"):
        from .keypoints import load_keypoints

        return load_keypoints(path, **kwargs)
    raise ValueError(f"{path}: unknown marker file type {ext!r}; expected .c3d, .trc, or keypoints .npy/.npz/.json")


def convert(src: PathLike, dst: PathLike, *, units: Optional[str] = None, **load_kwargs: Any) -> MarkerTrial:
    """Read ``src`` (.c3d or .trc) and write ``dst`` (.trc, or .c3d via ezc3d), in the same lab
    frame and, unless ``units`` is given, the source's length unit. ``load_kwargs`` go to the
    loader (e.g. ``points="all"``). Returns the trial that was written."""
    from .c3d import write_c3d
    from .trc import write_trc

    trial = load_markers(src, **load_kwargs)
    ext = Path(os.fspath(dst)).suffix.lower()
    if ext == ".trc":
        write_trc(dst, trial, units=units)
    elif ext == ".c3d":
        write_c3d(dst, trial, units=units)
    else:
        raise ValueError(f"{dst}: cannot write {ext!r}; use .trc or .c3d")
    return trial
