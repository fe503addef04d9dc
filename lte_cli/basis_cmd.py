"""``lte basis build|show|append`` — create and inspect basis artifacts."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import numpy.typing as npt
import orjson

from lte_cli.exit_status import reports_errors
from lte_core.basis import BasisArtifact
from lte_core.errors import BasisError


def _read_inputs(vectors: Path, ids: Path) -> tuple[list[str], npt.NDArray[np.float32]]:
    try:
        matrix = np.load(vectors, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BasisError(f"--vectors {vectors}: cannot read a .npy matrix ({exc})") from exc
    try:
        item_ids = ids.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BasisError(f"--ids {ids}: cannot read item ids ({exc})") from exc
    return item_ids, matrix


@click.group()
def basis() -> None:
    """Build, extend and inspect basis artifacts (item vectors + fixed semantic basis)."""


_VECTORS = click.option(
    "--vectors",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Item content vectors, an n x d .npy matrix (float32).",
)
_IDS = click.option(
    "--ids",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Item ids, one per line, line i for row i of --vectors.",
)


@basis.command()
@_VECTORS
@_IDS
@click.option(
    "--k",
    type=click.IntRange(min=1),
    default=None,
    help="Keep the top K principal directions. Default: identity basis (K = d).",
)
@click.option(
    "--content-model",
    default="unknown",
    show_default=True,
    help="Name of the content model that produced the vectors (part of the version).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write the artifact to.",
)
@reports_errors
def build(vectors: Path, ids: Path, k: int | None, content_model: str, out: Path) -> None:
    """Build a basis artifact from item vectors."""
    item_ids, matrix = _read_inputs(vectors, ids)
    artifact = BasisArtifact.build(item_ids, matrix, k=k, content_model=content_model)
    artifact.save(out)
    click.echo(
        f"basis {artifact.basis_version} ({artifact.kind}, d={artifact.d}, "
        f"k={artifact.k}, {artifact.n_items} items) -> {out}"
    )


@basis.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_VECTORS
@_IDS
@reports_errors
def append(directory: Path, vectors: Path, ids: Path) -> None:
    """Append new catalog items to an artifact; its basis_version stays the same."""
    item_ids, matrix = _read_inputs(vectors, ids)
    current = BasisArtifact.load(directory)
    extended = current.append(item_ids, matrix)
    extended.save(directory)
    click.echo(
        f"basis {extended.basis_version}: {extended.n_items - current.n_items} items "
        f"appended, {extended.n_items} in total"
    )


@basis.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
@reports_errors
def show(directory: Path, as_json: bool) -> None:
    """Verify an artifact and print its metadata."""
    artifact = BasisArtifact.load(directory)
    meta = artifact.metadata()
    if as_json:
        click.echo(orjson.dumps(meta, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        return
    for key, value in meta.items():
        click.echo(f"{key:>16}: {value}")
    click.echo(f"{'integrity':>16}: ok (content hashes to {artifact.basis_version})")
