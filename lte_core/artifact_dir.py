"""Replacing an artifact directory as a whole (basis and encoder artifacts).

Artifacts are directories of several files that are only meaningful together (the content
hash in one file covers the others), so a reader must never see a mix of old and new files.
The new files are written into a sibling temporary directory, which is then renamed into
place; a previous artifact is moved aside first and removed after.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_artifact_dir(directory: str | os.PathLike[str], fill: Callable[[Path], None]) -> Path:
    """Call ``fill`` with an empty temporary directory and move what it wrote to
    ``directory``, replacing any previous artifact there; return the final path."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target
