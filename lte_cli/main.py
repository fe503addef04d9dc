"""``lte`` — the command-line entry point.

Subcommands import their process's modules lazily so ``lte basis show`` does not pay for
Kafka or torch imports. Every deliberate error (:class:`LTEError`) becomes one line on
stderr and exit status 1 (:func:`lte_cli.exit_status.reports_errors`); flag syntax errors
are click's usage errors (status 2).
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lte-stream", prog_name="lte")
def cli() -> None:
    """Streaming updater of users' Long-Term Embeddings (LTE)."""


def _register() -> None:
    from lte_cli.basis_cmd import basis  # noqa: PLC0415 - keeps `lte --help` fast
    from lte_cli.broker_cmd import broker  # noqa: PLC0415
    from lte_cli.demo_cmd import demo  # noqa: PLC0415
    from lte_cli.evaluate_cmd import evaluate_cmd  # noqa: PLC0415
    from lte_cli.experiment_cmd import experiment  # noqa: PLC0415
    from lte_cli.feast_repo_cmd import feast_repo  # noqa: PLC0415
    from lte_cli.refresher_cmd import refresher  # noqa: PLC0415
    from lte_cli.replay_cmd import replay  # noqa: PLC0415
    from lte_cli.serve_cmd import serve  # noqa: PLC0415
    from lte_cli.snapshot_cmd import snapshot  # noqa: PLC0415
    from lte_cli.train_cmd import train_encoder  # noqa: PLC0415
    from lte_cli.worker_cmd import worker  # noqa: PLC0415

    cli.add_command(demo)
    cli.add_command(basis)
    cli.add_command(broker)
    cli.add_command(worker)
    cli.add_command(refresher)
    cli.add_command(serve)
    cli.add_command(replay)
    cli.add_command(train_encoder)
    cli.add_command(evaluate_cmd)
    cli.add_command(snapshot)
    cli.add_command(feast_repo)
    cli.add_command(experiment)


_register()
