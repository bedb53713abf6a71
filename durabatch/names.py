"""File names that are not valid UTF-8.

On Linux a name is bytes, and Python gives a byte that is not UTF-8 as a lone
surrogate, which SQLite cannot store. Such a path is stored written out
(``storable``: each such byte as ``\\xNN``), so the document is kept and can end
``failed`` with a message; ``undo`` finds the real path again from that text.
"""

from __future__ import annotations

import os
from pathlib import Path


def storable(path: str) -> str:
    """``path`` as UTF-8-safe text: the same text for a valid name, each byte that
    is not UTF-8 written as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def undo(path: Path) -> tuple[Path, Path] | None:
    """The real path ``path`` was written out from by ``storable``, and ``path`` up to
    the first name on it that is not UTF-8; None when there is no such real path.

    A name that exists as written is taken as it is; only a folder that lacks it is
    listed, by bytes, to find the name that ``storable`` writes out that way."""
    if "\\x" not in str(path):
        return None
    real = written = Path(path.anchor)
    bad = None
    for part in path.relative_to(path.anchor).parts:
        written /= part
        if not os.path.lexists(real / part):
            name = _listed(real, part)
            if name is None:
                return None
            part, bad = name, bad or written
        real /= part
    return None if bad is None else (real, bad)


def _listed(folder: Path, written: str) -> str | None:
    """The name in ``folder`` that ``storable`` writes as ``written``."""
    if "\\x" not in written:
        return None
    try:
        with os.scandir(os.fsencode(folder)) as entries:
            for entry in entries:
                if entry.name.decode("utf-8", "backslashreplace") == written:
                    return os.fsdecode(entry.name)
    except OSError:
        return None
    return None
