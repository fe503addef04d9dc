"""``lte feast-repo`` — a Feast feature repository for the LTEs of one basis and encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lte_cli.exit_status import reports_errors
from lte_cli.options import basis_option


@click.command("feast-repo")
@basis_option
@click.option(
    "--encoder",
    envvar="LTE_ENCODER",
    default="mean",
    show_default=True,
    show_envvar=True,
    help="As given to the worker: mean | recency:<half-life> | ae:<artifact dir>.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The repository directory; a second basis or encoder adds its view beside the first.",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="LTE_FEAST_REDIS",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    show_envvar=True,
    help="Feast's online store: redis://host:port/db or redis+cluster://host:port,… (no "
    "password: set one in feature_store.yaml through ${VAR}). Used when the repo is new.",
)
@click.option(
    "--offline-source",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Parquet of `lte snapshot --out` for get_historical_features. Default: "
    "data/<view>.parquet inside the repository.",
)
@click.option(
    "--apply/--no-apply",
    default=True,
    show_default=True,
    help="Run `feast apply` on the repository afterwards (registers the view).",
)
@reports_errors
def feast_repo(**options: Any) -> None:
    """Write (or extend) a Feast repository whose FeatureView and PushSource carry the LTEs of
    one (basis_version, encoder); `lte refresher --store feast://REPO` pushes to it.

    Needs the Feast extra: pip install 'lte-stream[feast]'.
    """
    from lte_core.basis import BasisArtifact  # noqa: PLC0415 - keeps `lte --help` fast
    from lte_core.encoders import EncoderSpec, build_encoder  # noqa: PLC0415
    from serving.feast_repo import apply_repo, write_repo  # noqa: PLC0415

    basis = BasisArtifact.load(options["basis_dir"])
    encoder = build_encoder(EncoderSpec.parse(options["encoder"]), basis)
    offline = options["offline_source"]
    names, written = write_repo(
        options["out"],
        basis_version=basis.basis_version,
        encoder=encoder.name,
        d=basis.d,
        k=basis.k,
        redis_url=options["redis_url"],
        offline_source=offline.resolve() if offline is not None else None,
    )
    click.echo(f"wrote {written} (view {names.view}, push source {names.push_source})")
    if options["apply"]:
        apply_repo(options["out"])
        click.echo(f"applied {options['out']}")
