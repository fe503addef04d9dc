"""``lte train-encoder`` and ``lte evaluate`` end to end on a tiny JSON-lines log."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from lte_cli.main import cli
from lte_core.autoencoder import AutoencoderArtifact, AutoencoderWeights
from tests.unit.interaction_logs import DAY, T0, catalog, random_log

TINY = ["--hidden", "8", "--epochs", "2", "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    basis = catalog(0, n_items=30, d=6)
    basis_dir = basis.save(root / "basis")
    log = random_log(0, basis, users=60, days=150)
    path = root / "events.jsonl"
    path.write_bytes(
        b"\n".join(
            orjson.dumps({"user_id": u, "item_id": i, "ts": t, "weight": w})
            for u, i, t, w in zip(
                log.user_ids.tolist(),
                log.item_ids.tolist(),
                log.ts.tolist(),
                log.weights.tolist(),
                strict=True,
            )
        )
    )
    return basis_dir, path


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.output


def test_train_then_evaluate(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    basis_dir, log = inputs
    common = ["--basis", str(basis_dir), "--log", str(log), "--window", "60d", "--horizon", "14d"]
    split = str(T0 + 100 * DAY)
    code, out = _invoke(
        [
            "train-encoder",
            *common,
            *("--lag", "7d", "--until", split, "--out", str(tmp_path / "enc" / "{version}")),
            *TINY,
        ]
    )
    assert code == 0, out
    (ae_dir,) = (tmp_path / "enc").iterdir()
    artifact = AutoencoderArtifact.load(ae_dir)
    assert ae_dir.name == artifact.encoder_version
    assert f"encoder {artifact.name} -> {ae_dir}" in out
    assert artifact.config["data"]["until"] == float(split)
    code, out = _invoke(
        [
            "evaluate",
            *common,
            "--split-at",
            split,
            "--lag",
            "0s",
            "--lag",
            "7d",
            "--every",
            "5d",
            "--encoder",
            "mean",
            "--encoder",
            f"ae:{ae_dir}",
            "--bootstrap",
            "20",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0, out
    assert "popularity" in out and artifact.name in out
    doc = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert {(r["method"], r["lag"]) for r in doc["rows"]} == {
        ("popularity", None),
        ("mean", 0),
        ("mean", 7 * DAY),
        (artifact.name, 0),
        (artifact.name, 7 * DAY),
    }
    assert (tmp_path / "eval" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    # Evaluating before the encoder's training data ended would leak: refused.
    code, out = _invoke(
        ["evaluate", *common, "--split-at", str(T0 + 90 * DAY), "--encoder", f"ae:{ae_dir}"]
    )
    assert code == 1 and "leak" in out


def test_errors_are_one_line_and_bad_flags_are_usage_errors(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    basis_dir, log = inputs
    common = ["train-encoder", "--basis", str(basis_dir), "--log", str(log), "--out", str(tmp_path)]
    code, out = _invoke([*common, "--val-span", "7d", "--horizon", "14d", *TINY])
    assert code == 1 and "lte: error: --val-span" in out
    code, _ = _invoke([*common, "--loss", "hinge"])
    assert code == 2
    code, out = _invoke(
        ["evaluate", "--basis", str(basis_dir), "--log", str(log), "--split-at", "soon"]
    )
    assert code == 2 and "--split-at" in out


def test_the_worker_refuses_an_encoder_of_another_basis(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    basis_dir, _ = inputs
    other = catalog(9, n_items=30, d=6)
    weights_dir = AutoencoderArtifact.create(
        AutoencoderWeights.mean_equivalent(6, 6, hidden=4),
        {"basis_version": other.basis_version},
    ).save(tmp_path / "ae")
    code, out = _invoke(
        [
            "worker",
            "--basis",
            str(basis_dir),
            "--encoder",
            f"ae:{weights_dir}",
            "--broker",
            "127.0.0.1:1",
            "--state-dir",
            str(tmp_path / "state"),
        ]
    )
    assert code == 1
    assert f"trained on basis {other.basis_version}" in out and "lte train-encoder" in out
