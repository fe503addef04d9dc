"""The basis artifact (DESIGN 3.3): item content vectors and the fixed semantic basis.

An artifact is a directory::

    metadata.json       format, basis_version, d, k, counts, content model, provenance
    item_ids.txt        one item id per line (row i of the matrices below)
    item_vectors.npy    n x d float32, read with allow_pickle=False
    basis.npy           K x d float32, orthonormal rows

``basis_version`` is a hash of what an LTE's meaning depends on: the basis rows, the content
model name, and the items (ids and vectors) the artifact was created with. Appending new
items later keeps the version (those items are embedded by the same model and cannot change
any LTE computed before); changing an existing item's vector is refused. ``load`` re-hashes
and refuses an artifact whose files no longer match its version.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lte_core.artifact_dir import write_artifact_dir
from lte_core.errors import BasisError, BasisIntegrityError, ItemVectorChangedError

FORMAT = 1
_METADATA = "metadata.json"
_IDS = "item_ids.txt"
_VECTORS = "item_vectors.npy"
_BASIS = "basis.npy"
MAX_ITEM_ID_CHARS = 256
_ORTHONORMAL_TOL = 1e-4


def _check_ids(ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for i, item_id in enumerate(ids):
        if not item_id or len(item_id) > MAX_ITEM_ID_CHARS:
            raise BasisError(f"item id at row {i} must be 1-{MAX_ITEM_ID_CHARS} characters")
        if "\n" in item_id or "\r" in item_id:
            raise BasisError(f"item id at row {i} contains a line break")
        if item_id in seen:
            raise BasisError(f"item id {item_id!r} appears twice (row {i})")
        seen.add(item_id)


def _check_vectors(vectors: npt.NDArray[Any], n_ids: int) -> npt.NDArray[np.float32]:
    if vectors.ndim != 2:
        raise BasisError(f"item vectors must be a 2-D matrix, got shape {vectors.shape}")
    if vectors.shape[0] != n_ids:
        raise BasisError(f"{vectors.shape[0]} item vectors but {n_ids} item ids; they must match")
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(out).all():
        raise BasisError("item vectors contain NaN or infinity")
    return out


def _check_basis(basis: npt.NDArray[Any], d: int) -> npt.NDArray[np.float32]:
    if basis.ndim != 2 or basis.shape[1] != d or not 1 <= basis.shape[0] <= d:
        raise BasisError(f"basis must be K x {d} with 1 <= K <= {d}, got shape {basis.shape}")
    out = np.ascontiguousarray(basis, dtype=np.float32)
    gram = out.astype(np.float64) @ out.astype(np.float64).T
    err = float(np.abs(gram - np.eye(out.shape[0])).max())
    if err > _ORTHONORMAL_TOL:
        raise BasisError(f"basis rows are not orthonormal (max |B·Bᵀ - I| = {err:.2e})")
    return out


def compute_version(
    ids: Sequence[str],
    vectors: npt.NDArray[np.float32],
    basis: npt.NDArray[np.float32],
    content_model: str,
) -> str:
    """Content hash identifying the semantic space an LTE lives in (16 hex chars)."""
    h = hashlib.sha256()
    h.update(f"lte-basis/{FORMAT}\0{content_model}\0".encode())
    h.update(np.asarray(basis.shape, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(basis, dtype="<f4").tobytes())
    h.update(np.asarray(vectors.shape, dtype="<i8").tobytes())
    for item_id in ids:
        h.update(item_id.encode())
        h.update(b"\n")
    h.update(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
    return h.hexdigest()[:16]


def principal_directions(vectors: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    """Top-``k`` principal directions of the *uncentred* item matrix (right singular
    vectors), i.e. the rank-k subspace that best reconstructs item vectors by ``BᵀB·v``.

    Uncentred because an LTE is reconstructed through the origin; centring would drop the
    common direction that all content embeddings share. Computed from the d x d Gram matrix
    (memory independent of the catalog size) with a fixed sign convention, so the same
    vectors always give the same basis.
    """
    d = vectors.shape[1]
    if not 1 <= k <= d:
        raise BasisError(f"--k must be between 1 and d={d}, got {k}")
    x = vectors.astype(np.float64)
    gram = x.T @ x
    eigvals, eigvecs = np.linalg.eigh(gram)
    order = np.argsort(eigvals, kind="stable")[::-1][:k]
    basis = eigvecs[:, order].T
    pivots = np.argmax(np.abs(basis), axis=1)
    signs = np.sign(basis[np.arange(k), pivots])
    basis *= signs[:, None]
    return np.ascontiguousarray(basis, dtype=np.float32)


@dataclass(frozen=True)
class BasisArtifact:
    """Immutable item catalog + basis. Build with :meth:`build`, extend with :meth:`append`."""

    item_ids: tuple[str, ...]
    item_vectors: npt.NDArray[np.float32]
    basis: npt.NDArray[np.float32]
    basis_version: str
    content_model: str
    versioned_items: int
    kind: str
    extra: dict[str, Any] = field(default_factory=dict)
    _rows: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._rows:
            self._rows.update({item_id: i for i, item_id in enumerate(self.item_ids)})
        self.item_vectors.flags.writeable = False
        self.basis.flags.writeable = False

    # -- construction --------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        vectors: npt.NDArray[Any],
        *,
        k: int | None = None,
        basis: npt.NDArray[Any] | None = None,
        content_model: str = "unknown",
        extra: dict[str, Any] | None = None,
    ) -> BasisArtifact:
        """Identity basis when neither ``k`` nor ``basis`` is given (K = d, the LTE vector is
        exactly the weighted mean); the top-``k`` principal directions with ``k``; or an
        explicit orthonormal ``basis``."""
        ids = tuple(ids)
        _check_ids(ids)
        vecs = _check_vectors(np.asarray(vectors), len(ids))
        d = vecs.shape[1]
        if basis is not None and k is not None:
            raise BasisError("give either --k or an explicit basis, not both")
        if basis is not None:
            b = _check_basis(np.asarray(basis), d)
            kind = "explicit"
        elif k is not None:
            b = principal_directions(vecs, k)
            kind = "pca"
        else:
            b = np.eye(d, dtype=np.float32)
            kind = "identity"
        info = dict(extra or {})
        if kind == "pca":
            total = float(np.square(vecs.astype(np.float64)).sum())
            kept = float(np.square(vecs.astype(np.float64) @ b.T.astype(np.float64)).sum())
            info["energy_kept"] = kept / total if total else 1.0
        return cls(
            item_ids=ids,
            item_vectors=vecs,
            basis=b,
            basis_version=compute_version(ids, vecs, b, content_model),
            content_model=content_model,
            versioned_items=len(ids),
            kind=kind,
            extra=info,
        )

    def append(self, ids: Sequence[str], vectors: npt.NDArray[Any]) -> BasisArtifact:
        """A new artifact with new items added, same ``basis_version``.

        Items already present with the very same vector are skipped (appending is
        idempotent); an existing item with a different vector raises
        :class:`ItemVectorChangedError`.
        """
        ids = tuple(ids)
        vecs = _check_vectors(np.asarray(vectors), len(ids))
        if vecs.shape[1] != self.d:
            raise BasisError(f"new vectors have d={vecs.shape[1]}, the artifact has d={self.d}")
        new_ids: list[str] = []
        new_rows: list[int] = []
        batch_seen: set[str] = set()
        for i, item_id in enumerate(ids):
            row = self._rows.get(item_id)
            if row is not None:
                if not np.array_equal(self.item_vectors[row], vecs[i]):
                    raise ItemVectorChangedError(
                        f"item {item_id!r} already exists with a different vector; existing "
                        "vectors are immutable (use a new item id, or build a new basis)"
                    )
                continue
            if item_id in batch_seen:
                raise BasisError(f"item id {item_id!r} appears twice in the appended items")
            batch_seen.add(item_id)
            new_ids.append(item_id)
            new_rows.append(i)
        _check_ids(new_ids)
        merged_ids = self.item_ids + tuple(new_ids)
        merged = np.concatenate([self.item_vectors, vecs[new_rows]], axis=0)
        return BasisArtifact(
            item_ids=merged_ids,
            item_vectors=merged,
            basis=self.basis,
            basis_version=self.basis_version,
            content_model=self.content_model,
            versioned_items=self.versioned_items,
            kind=self.kind,
            extra=dict(self.extra),
        )

    # -- lookups -------------------------------------------------------------------------

    @property
    def d(self) -> int:
        return int(self.item_vectors.shape[1])

    @property
    def k(self) -> int:
        return int(self.basis.shape[0])

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def is_identity(self) -> bool:
        return self.kind == "identity"

    def row_of(self, item_id: str) -> int | None:
        return self._rows.get(item_id)

    def rows_of(self, item_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Rows for ids, -1 where the item is unknown."""
        get = self._rows.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64)

    @property
    def row_index(self) -> dict[str, int]:
        """item id -> row (read-only by convention; shared, not copied)."""
        return self._rows

    # -- files ---------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "basis_version": self.basis_version,
            "kind": self.kind,
            "d": self.d,
            "k": self.k,
            "n_items": self.n_items,
            "versioned_items": self.versioned_items,
            "content_model": self.content_model,
            "extra": self.extra,
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the artifact; files are written to a temporary directory and renamed into
        place so readers never see a half-written artifact."""

        def fill(tmp: Path) -> None:
            (tmp / _IDS).write_text("".join(f"{i}\n" for i in self.item_ids), encoding="utf-8")
            np.save(tmp / _VECTORS, self.item_vectors, allow_pickle=False)
            np.save(tmp / _BASIS, self.basis, allow_pickle=False)
            (tmp / _METADATA).write_text(
                json.dumps(self.metadata(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )

        return write_artifact_dir(directory, fill)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, verify: bool = True) -> BasisArtifact:
        path = Path(directory)
        meta_path = path / _METADATA
        if not meta_path.is_file():
            raise BasisError(
                f"{path} is not a basis artifact (no {_METADATA}); create one with "
                "`lte basis build --vectors X.npy --ids ids.txt --out DIR`"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BasisError(f"{meta_path}: cannot read metadata ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise BasisError(f"{meta_path}: unsupported artifact format {meta.get('format')!r}")
        try:
            ids = tuple((path / _IDS).read_text(encoding="utf-8").splitlines())
            vectors = np.load(path / _VECTORS, allow_pickle=False)
            basis = np.load(path / _BASIS, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BasisError(f"{path}: cannot read artifact files ({exc})") from exc
        vecs = _check_vectors(vectors, len(ids))
        b = _check_basis(basis, vecs.shape[1])
        n0 = int(meta["versioned_items"])
        if not 1 <= n0 <= len(ids):
            raise BasisIntegrityError(f"{meta_path}: versioned_items={n0} is out of range")
        content_model = str(meta.get("content_model", "unknown"))
        if verify:
            _check_ids(ids)
            actual = compute_version(ids[:n0], vecs[:n0], b, content_model)
            if actual != meta["basis_version"]:
                raise BasisIntegrityError(
                    f"{path}: content hashes to {actual} but metadata says "
                    f"{meta['basis_version']}; the artifact was modified. Rebuild it with "
                    "`lte basis build`."
                )
        return cls(
            item_ids=ids,
            item_vectors=vecs,
            basis=b,
            basis_version=str(meta["basis_version"]),
            content_model=content_model,
            versioned_items=n0,
            kind=str(meta["kind"]),
            extra=dict(meta.get("extra", {})),
        )
