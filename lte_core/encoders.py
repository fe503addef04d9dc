"""Encoders: a window's contents -> (K coefficients, d-vector) on the fixed basis (DESIGN 3.3).

The LTE vector is always ``Bᵀ·c`` for coefficients ``c``: whatever the encoder, the result
stays in the span of the content basis, which is what keeps LTEs comparable across model
versions. Encoders read O(d) running sums (:class:`~lte_core.summary.WindowSummary`), never
the events, so emitting an LTE costs the same for a 7-day and a 2-year window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.duration import format_duration, parse_duration
from lte_core.errors import ConfigError, EncoderError
from lte_core.summary import WindowSummary

F64Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Encoded:
    """Row i belongs to window i of the batch."""

    coefficients: F64Array
    vectors: F64Array


class Projection:
    """``c = B·x`` and ``v = Bᵀ·c``; a no-op for the identity basis (exact, and d² cheaper)."""

    __slots__ = ("_basis", "_identity")

    def __init__(self, basis: BasisArtifact) -> None:
        self._identity = basis.is_identity
        self._basis = basis.basis.astype(np.float64)

    def __call__(self, x: F64Array) -> Encoded:
        return self.from_coefficients(self.coefficients(x))

    def coefficients(self, x: F64Array) -> F64Array:
        """``B·x`` (``x`` itself, not a copy, for the identity basis)."""
        return x if self._identity else x @ self._basis.T

    def from_coefficients(self, coefficients: F64Array) -> Encoded:
        if self._identity:
            return Encoded(coefficients=coefficients, vectors=coefficients)
        return Encoded(coefficients=coefficients, vectors=coefficients @ self._basis)


class Encoder(Protocol):
    """Maps a batch of non-empty windows to LTEs."""

    @property
    def name(self) -> str:
        """Written into every update's ``encoder`` field and part of the store key."""
        ...

    def encode(self, windows: WindowSummary) -> Encoded: ...


def _check_non_empty(windows: WindowSummary) -> None:
    if (windows.counts <= 0).any():
        i = int(np.flatnonzero(windows.counts <= 0)[0])
        raise ValueError(f"window {i} is empty; empty windows have no LTE (vector = null)")


class MeanEncoder:
    """Uniform weighted mean ``Σ wᵢvᵢ / Σ wᵢ`` of the window, projected on the basis."""

    name = "mean"

    def __init__(self, basis: BasisArtifact) -> None:
        self._project = Projection(basis)

    def encode(self, windows: WindowSummary) -> Encoded:
        _check_non_empty(windows)
        return self._project(windows.sums / windows.weight_sums[:, None])


class RecencyEncoder:
    """Exponentially decayed mean: event weight ``wᵢ · 2^-(age/half_life)``.

    Age is counted in whole buckets (the state keeps buckets, not exact timestamps). It
    reads the decayed sums that a :class:`~lte_core.engine.WindowEngine` built with the
    same half-life maintains, so it costs O(d) per user like ``mean``.
    """

    def __init__(self, basis: BasisArtifact, half_life: int) -> None:
        if half_life <= 0:
            raise ConfigError("encoder: recency half-life must be positive")
        self._project = Projection(basis)
        self.half_life = half_life
        self.name = f"recency:{format_duration(half_life)}"

    def encode(self, windows: WindowSummary) -> Encoded:
        _check_non_empty(windows)
        if windows.decayed_sums is None or windows.decayed_weights is None:
            raise EncoderError(
                f"{self.name}: the window state keeps no decayed sums; build the engine with "
                f"half_life={self.half_life}"
            )
        return self._project(windows.decayed_sums / windows.decayed_weights[:, None])


@dataclass(frozen=True, slots=True)
class EncoderSpec:
    """A parsed ``--encoder`` flag: ``mean``, ``recency:<half-life>`` or ``ae:<artifact dir>``."""

    kind: str
    half_life: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> EncoderSpec:
        kind, _, arg = text.partition(":")
        if kind == "mean" and not arg:
            return cls("mean")
        if kind == "recency" and arg:
            return cls("recency", half_life=parse_duration(arg, field="--encoder recency"))
        if kind == "ae" and arg:
            return cls("ae", path=arg)
        raise ConfigError(
            f"--encoder: expected mean, recency:<half-life> (e.g. recency:30d) or "
            f"ae:<artifact dir>; got {text!r}"
        )


def build_encoder(spec: EncoderSpec, basis: BasisArtifact) -> Encoder:
    if spec.kind == "mean":
        return MeanEncoder(basis)
    if spec.kind == "recency":
        return RecencyEncoder(basis, spec.half_life)
    if spec.kind == "ae":
        from lte_core.autoencoder import AutoencoderEncoder  # noqa: PLC0415 - safetensors

        return AutoencoderEncoder.load(spec.path, basis)
    raise EncoderError(f"--encoder: unknown encoder kind {spec.kind!r}")
