"""Encoders: a window's contents -> (K coefficients, d-vector) on the fixed basis (DESIGN 3.3).

The LTE vector is always ``Bᵀ·c`` for coefficients ``c``: whatever the encoder, the result
stays in the span of the content basis, which is what keeps LTEs comparable across model
versions. ``mean`` (uniform weighted average, the default and the paper's winner) needs only
the running sum the state keeps, so it costs O(d) per user; ``recency`` re-weights the
window's events by age and therefore reads the event multiset, O(n·d) per user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.duration import format_duration, parse_duration
from lte_core.errors import ConfigError, EncoderError

F64Array = npt.NDArray[np.float64]


class WindowContents(Protocol):
    """What an encoder may read of one user's window (``LaggedWindow`` provides it)."""

    @property
    def sum(self) -> F64Array: ...

    @property
    def weight_sum(self) -> float: ...

    @property
    def count(self) -> int: ...

    def window_items(self) -> npt.NDArray[np.uint32]: ...

    def window_weights(self) -> npt.NDArray[np.float32]: ...

    def window_buckets(self) -> npt.NDArray[np.int64]: ...


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
        if self._identity:
            return Encoded(coefficients=x, vectors=x)
        coefficients = x @ self._basis.T
        return Encoded(coefficients=coefficients, vectors=coefficients @ self._basis)

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

    def encode(self, windows: Sequence[WindowContents]) -> Encoded: ...


def _check_non_empty(windows: Sequence[WindowContents]) -> None:
    for i, w in enumerate(windows):
        if w.count <= 0:
            raise ValueError(f"window {i} is empty; empty windows have no LTE (vector = null)")


class MeanEncoder:
    """Uniform weighted mean ``Σ wᵢvᵢ / Σ wᵢ`` of the window, projected on the basis."""

    name = "mean"

    def __init__(self, basis: BasisArtifact) -> None:
        self._project = Projection(basis)
        self._d = basis.d

    def encode(self, windows: Sequence[WindowContents]) -> Encoded:
        _check_non_empty(windows)
        if not windows:
            return self._project(np.empty((0, self._d)))
        sums = np.stack([w.sum for w in windows])
        weights = np.fromiter((w.weight_sum for w in windows), dtype=np.float64)
        return self._project(sums / weights[:, None])


class RecencyEncoder:
    """Exponentially decayed mean: event weight ``wᵢ · 2^-(age/half_life)``.

    Age is measured in whole buckets from the newest event of the window (the state keeps
    buckets, not exact timestamps), so the LTE changes only when events enter or leave,
    like ``mean``; the common decay factor of a later clock cancels in the mean.
    """

    def __init__(self, basis: BasisArtifact, half_life: int, bucket: int) -> None:
        if half_life <= 0:
            raise ConfigError("encoder: recency half-life must be positive")
        self._project = Projection(basis)
        self._vectors = basis.item_vectors
        self._d = basis.d
        self._half_life = half_life
        self._bucket = bucket
        self.name = f"recency:{format_duration(half_life)}"

    def encode(self, windows: Sequence[WindowContents]) -> Encoded:
        _check_non_empty(windows)
        out = np.empty((len(windows), self._d), dtype=np.float64)
        for i, w in enumerate(windows):
            buckets = w.window_buckets()
            age = (buckets.max() - buckets).astype(np.float64) * (self._bucket / self._half_life)
            wts = w.window_weights().astype(np.float64) * np.exp2(-age)
            out[i] = (wts @ self._vectors[w.window_items()].astype(np.float64)) / wts.sum()
        return self._project(out)


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


def build_encoder(spec: EncoderSpec, basis: BasisArtifact, bucket: int) -> Encoder:
    if spec.kind == "mean":
        return MeanEncoder(basis)
    if spec.kind == "recency":
        return RecencyEncoder(basis, spec.half_life, bucket)
    raise EncoderError(f"--encoder: ae encoders are not available in this build ({spec.path})")
