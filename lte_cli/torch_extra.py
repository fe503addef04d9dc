"""Commands that train need torch, which only the ``offline`` extra installs.

The worker, the stores, the API and the demo never import torch, so an install for them
(``pip install lte-stream``) leaves it out; a training command run there should say how to
get it instead of failing with an import traceback.
"""

from __future__ import annotations

import importlib.util

from lte_core.errors import LTEError


class TorchMissingError(LTEError):
    """A command needs torch and this installation has none."""


def require_torch(command: str) -> None:
    if importlib.util.find_spec("torch") is None:
        raise TorchMissingError(
            f"`lte {command}` trains with torch, which is not installed here: "
            "pip install 'lte-stream[offline]'"
        )
