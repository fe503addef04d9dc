from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from lte_cli.main import cli
from lte_core.basis import BasisArtifact, principal_directions
from lte_core.errors import BasisError, BasisIntegrityError, ItemVectorChangedError


def _catalog(n: int = 40, d: int = 8, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"item-{i}" for i in range(n)], rng.standard_normal((n, d)).astype(np.float32)


def test_identity_basis_by_default(tmp_path: Path) -> None:
    ids, vecs = _catalog()
    art = BasisArtifact.build(ids, vecs)
    assert art.kind == "identity" and art.k == art.d == 8
    np.testing.assert_array_equal(art.basis, np.eye(8, dtype=np.float32))
    loaded = BasisArtifact.load(art.save(tmp_path / "b"))
    assert loaded.basis_version == art.basis_version
    assert loaded.item_ids == tuple(ids)
    np.testing.assert_array_equal(loaded.item_vectors, vecs)
    assert loaded.row_of("item-7") == 7 and loaded.row_of("nope") is None


def test_version_is_content_derived() -> None:
    ids, vecs = _catalog()
    a = BasisArtifact.build(ids, vecs).basis_version
    assert BasisArtifact.build(ids, vecs.copy()).basis_version == a
    changed = vecs.copy()
    changed[3, 2] += 1e-3
    assert BasisArtifact.build(ids, changed).basis_version != a
    assert BasisArtifact.build(ids, vecs, content_model="other").basis_version != a
    assert BasisArtifact.build(ids, vecs, k=3).basis_version != a


@given(st.integers(1, 8), st.integers(0, 50))
def test_pca_basis_is_orthonormal_deterministic_and_optimal(k: int, seed: int) -> None:
    _, vecs = _catalog(60, 8, seed)
    b = principal_directions(vecs, k).astype(np.float64)
    np.testing.assert_allclose(b @ b.T, np.eye(k), atol=1e-5)
    np.testing.assert_array_equal(principal_directions(vecs, k), principal_directions(vecs, k))
    # Eckart-Young: the residual of the top-k subspace equals the tail singular values.
    x = vecs.astype(np.float64)
    residual = np.square(x - x @ b.T @ b).sum()
    s = np.linalg.svd(x, compute_uv=False)
    assert residual == pytest.approx(np.square(s[k:]).sum(), rel=1e-3, abs=1e-3)


def test_append_keeps_version_and_refuses_changes(tmp_path: Path) -> None:
    ids, vecs = _catalog()
    art = BasisArtifact.build(ids[:30], vecs[:30], k=4)
    more = art.append(ids[25:], vecs[25:])  # overlap with identical vectors is skipped
    assert more.n_items == 40 and more.basis_version == art.basis_version
    assert more.row_of("item-39") == 39
    reloaded = BasisArtifact.load(more.save(tmp_path / "b"))
    assert reloaded.basis_version == art.basis_version and reloaded.n_items == 40
    changed = vecs[:2].copy()
    changed[1, 0] += 1.0
    with pytest.raises(ItemVectorChangedError, match="item-1"):
        art.append(ids[:2], changed)


def test_load_refuses_edited_artifact(tmp_path: Path) -> None:
    ids, vecs = _catalog()
    path = BasisArtifact.build(ids, vecs).save(tmp_path / "b")
    tampered = vecs.copy()
    tampered[0, 0] = 42.0
    np.save(path / "item_vectors.npy", tampered)
    with pytest.raises(BasisIntegrityError, match="modified"):
        BasisArtifact.load(path)


@pytest.mark.parametrize(
    ("ids", "shape", "message"),
    [
        (["a", "a"], (2, 3), "twice"),
        (["a", ""], (2, 3), "row 1"),
        (["a"], (2, 3), "must match"),
        (["a\nb"], (1, 3), "line break"),
    ],
)
def test_build_validates_inputs(ids: list[str], shape: tuple[int, int], message: str) -> None:
    with pytest.raises(BasisError, match=message):
        BasisArtifact.build(ids, np.zeros(shape, dtype=np.float32))


def test_cli_build_show_append(tmp_path: Path) -> None:
    ids, vecs = _catalog()
    np.save(tmp_path / "v.npy", vecs[:30])
    (tmp_path / "ids.txt").write_text("\n".join(ids[:30]) + "\n")
    runner = CliRunner()
    out = tmp_path / "basis"
    result = runner.invoke(
        cli,
        [
            "basis",
            "build",
            "--vectors",
            str(tmp_path / "v.npy"),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--k",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    version = BasisArtifact.load(out).basis_version
    assert version in result.output
    shown = runner.invoke(cli, ["basis", "show", str(out), "--json"])
    meta = json.loads(shown.output)
    assert (meta["k"], meta["d"], meta["n_items"], meta["basis_version"]) == (3, 8, 30, version)
    np.save(tmp_path / "v2.npy", vecs[30:])
    (tmp_path / "ids2.txt").write_text("\n".join(ids[30:]) + "\n")
    appended = runner.invoke(
        cli,
        [
            "basis",
            "append",
            str(out),
            "--vectors",
            str(tmp_path / "v2.npy"),
            "--ids",
            str(tmp_path / "ids2.txt"),
        ],
    )
    assert appended.exit_code == 0, appended.output
    assert BasisArtifact.load(out).n_items == 40


def test_cli_errors_exit_non_zero_with_message(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((3, 2), dtype=np.float32))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    result = CliRunner().invoke(
        cli,
        [
            "basis",
            "build",
            "--vectors",
            str(tmp_path / "v.npy"),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1
    assert "lte: error:" in result.output and "must match" in result.output
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    result = CliRunner().invoke(
        cli,
        [
            "basis",
            "build",
            "--vectors",
            str(tmp_path / "bad.npy"),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1 and "--vectors" in result.output
    result = CliRunner().invoke(
        cli,
        [
            "basis",
            "build",
            "--k",
            "0",
            "--vectors",
            str(tmp_path / "v.npy"),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "--k" in result.output
