"""The exception root of the project and the errors of the pure core.

Every error the product raises on purpose derives from :class:`LTEError`, so callers
(CLIs, the worker loop, the API) can tell "a documented condition with a remedy" from a
bug. Messages name the offending field or flag and say what to do about it.
"""

from __future__ import annotations


class LTEError(Exception):
    """Root of every error raised deliberately by this project."""


class ConfigError(LTEError, ValueError):
    """A setting (flag, environment variable, file) is invalid; the message names it."""


class BasisError(LTEError):
    """A basis artifact cannot be built, read or extended."""


class BasisIntegrityError(BasisError):
    """The artifact's content does not hash to the version it claims: it was edited or is
    corrupt. Rebuild it with `lte basis build` instead of editing files in place."""


class ItemVectorChangedError(BasisError):
    """Appending would change the vector of an item that already exists. Existing vectors
    are immutable because LTEs already computed from them must stay valid; embed the changed
    item under a new id, or build a new basis (a new `basis_version`)."""


class StateCodecError(LTEError):
    """Serialised window state cannot be decoded (wrong format version, dimension, or
    truncated bytes)."""


class EventTimeRangeError(LTEError, ValueError):
    """An event time is too far from the window clock to be represented in the state."""


class EncoderError(LTEError):
    """An encoder cannot be built or does not fit the basis it is used with."""


class UpdateFormatError(LTEError, ValueError):
    """An LTE update record does not follow the `lte-updates` contract (DESIGN 3.4)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class EncoderArtifactError(EncoderError):
    """An encoder artifact cannot be read, or its files do not hash to the version it
    claims. Artifacts are written by `lte train-encoder` and never edited by hand."""


class EncoderBasisMismatchError(EncoderError):
    """An encoder was trained on another basis than the one it is asked to serve: its
    coefficients would mean something else. Train an encoder on this basis instead."""
