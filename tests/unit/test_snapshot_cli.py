"""``lte snapshot`` end to end on small files: what it writes (jsonl and parquet), the
leakage guard, and its one-line refusals of bad input."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from lte_cli.main import cli
from lte_core.basis import BasisArtifact
from offline import snapshot as snapshot_module
from offline import snapshot_files
from tests.oracle import Ev, Spec, in_window
from tests.unit.interaction_logs import DAY, T0, catalog, random_log

WINDOW = ["--window", "30d", "--lag", "7d", "--bucket", "1d"]
SPEC = Spec(30 * DAY, 7 * DAY, DAY)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[BasisArtifact, Path, Path]:
    root = tmp_path_factory.mktemp("snapshot")
    basis = catalog(1, n_items=20, d=4)
    log = random_log(1, basis, users=12, days=90)
    lines = [
        {"user_id": u, "item_id": i, "ts": t, "weight": w, "type": "view" if w == 1 else "cart"}
        for u, i, t, w in zip(
            log.user_ids.tolist(),
            log.item_ids.tolist(),
            log.ts.tolist(),
            log.weights.tolist(),
            strict=True,
        )
    ]
    lines.append({"user_id": "u0", "item_id": "not-in-basis", "ts": T0 + DAY})
    path = root / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(doc) for doc in lines) + b"\n")
    return basis, basis.save(root / "basis"), path


def invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["snapshot", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def write_pairs(path: Path, rows: list[str], header: str = "user_id,ts,label,seq") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def expected(log_path: Path, basis: BasisArtifact, user: str, clock: float) -> Any:
    """From scratch, with the worker's type weights (view=1, cart=3)."""
    events = []
    for line in log_path.read_bytes().splitlines():
        doc = orjson.loads(line)
        row = basis.row_of(doc["item_id"])
        if doc["user_id"] == user and row is not None:
            weight = doc.get("weight", 1.0) * (3.0 if doc.get("type") == "cart" else 1.0)
            events.append(Ev(item=row, ts=doc["ts"], weight=weight))
    inside = in_window(SPEC, clock, events)
    if not inside:
        return 0, None
    w = np.array([e.weight for e in inside])
    v = basis.item_vectors[[e.item for e in inside]].astype(np.float64)
    return len(inside), (w[:, None] * v).sum(0) / w.sum()


@pytest.mark.parametrize("tiny", [False, True], ids=["default", "many-blocks-tiny-chunks"])
def test_jsonl_and_parquet_hold_the_oracle_rows_in_input_order(
    inputs: tuple[BasisArtifact, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny: bool,
) -> None:
    """Also with users dealt to several blocks, the log partitioned a few events at a time
    and the rows read back and written a few at a time (extra columns stay in order)."""
    if tiny:
        monkeypatch.setattr(snapshot_module, "BLOCK_BYTES", 512)
        monkeypatch.setattr(snapshot_module, "CHUNK_EVENTS", 7)
        monkeypatch.setattr(snapshot_module, "CHUNK_ROWS", 4)
        monkeypatch.setattr(snapshot_files, "_ROWS_PER_CHUNK", 3)
    basis, basis_dir, log = inputs
    clocks = [T0 + 40 * DAY, T0 + 10 * DAY + 0.5, T0 + 200 * DAY, T0 + 60 * DAY]
    rows = [f"u{k % 12},{t!r},L{k},{t - 7 * DAY}" for k, t in enumerate(clocks * 3)]
    rows.append(f"stranger,{T0 + 50 * DAY},L-x,{T0}")
    rows.append(f"u3,2020-10-01T00:00:00Z,L-iso,{T0}")
    pairs = write_pairs(tmp_path / "pairs.csv", rows)
    outputs = {}
    for suffix in (".jsonl", ".parquet"):
        out = tmp_path / f"snap{suffix}"
        code, _, err = invoke(
            [
                *("--log", str(log), "--at", str(pairs), "--basis", str(basis_dir)),
                *WINDOW,
                *("--type-weights", "view=1,cart=3", "--out", str(out)),
            ]
        )
        assert code == 0, err
        assert f"skipped 1 events of {log}" in err
        outputs[suffix] = out
    docs = [orjson.loads(line) for line in outputs[".jsonl"].read_bytes().splitlines()]
    table = pq.read_table(outputs[".parquet"])
    assert table.num_rows == len(docs) == len(rows)
    groups = pq.ParquetFile(outputs[".parquet"]).num_row_groups
    assert groups >= len(rows) // 4 if tiny else groups == 1
    assert table.schema.field("vector").type == pa.list_(pa.float32())
    assert table.schema.field("coefficients").type == pa.list_(pa.float32())
    assert table.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    meta = table.schema.metadata
    assert meta[b"lte.basis_version"] == basis.basis_version.encode()
    assert meta[b"lte.encoder"] == b"mean"
    assert orjson.loads(meta[b"lte.window"])["lag"] == 7 * DAY
    nonempty = 0
    for k, (doc, rec) in enumerate(zip(docs, table.to_pylist(), strict=True)):
        user, ts_text, label, _ = rows[k].split(",")
        assert doc["user_id"] == rec["user_id"] == user and doc["label"] == rec["label"] == label
        assert rec["event_timestamp"].timestamp() == pytest.approx(doc["as_of"], abs=1e-6)
        if "T" not in ts_text:
            assert doc["as_of"] == rec["as_of"] == float(ts_text)
        n, mean = expected(log, basis, user, doc["as_of"])
        assert doc["n_events"] == rec["n_events"] == n
        assert doc["basis_version"] == basis.basis_version
        if mean is None:
            assert doc["vector"] is rec["vector"] is doc["coefficients"] is None
            continue
        nonempty += 1
        np.testing.assert_allclose(doc["vector"], mean, atol=1e-6)
        np.testing.assert_allclose(rec["vector"], mean, atol=1e-6)
    assert nonempty >= 5 and len(docs) - nonempty >= 5
    assert docs[-1]["as_of"] == 1601510400.0  # 2020-10-01T00:00:00Z


def test_leakage_is_refused_with_a_count_unless_marked(
    inputs: tuple[BasisArtifact, Path, Path], tmp_path: Path
) -> None:
    _, basis_dir, log = inputs
    clock = T0 + 40 * DAY
    window_end = (clock - 7 * DAY) // DAY * DAY
    pairs = write_pairs(
        tmp_path / "pairs.csv",
        [
            f"u1,{clock},ok,{window_end}",
            f"u2,{clock},leak,{window_end - 1}",
            f"u3,{clock},ok,{clock}",
            f"u4,{clock},leak,{T0}",
        ],
    )
    out = tmp_path / "out.jsonl"
    args = [*("--log", str(log), "--at", str(pairs), "--basis", str(basis_dir)), *WINDOW]
    code, _, err = invoke([*args, "--out", str(out), "--sequence-start-col", "seq"])
    assert code == 1 and not out.exists()
    (error,) = [line for line in err.splitlines() if line.startswith("lte: error:")]
    assert "2 of 4 rows" in error and "line 3 user u2" in error, err
    code, _, err = invoke(
        [*args, "--out", str(out), "--sequence-start-col", "seq", "--allow-overlap"]
    )
    assert code == 0, err
    docs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [d["overlap"] for d in docs] == [d["label"] == "leak" for d in docs]
    assert all(d["window_end"] == window_end for d in docs)


@pytest.mark.parametrize(
    ("pairs", "extra", "message"),
    [
        ("user_id,ts\nu1,yesterday\n", [], r"pairs\.csv:2: ts: 'yesterday' is not a time"),
        ("user_id,ts\nu1,1.0\nu2,2.0,3\n", [], r"pairs\.csv:3: 3 fields, the header has 2"),
        ("user,ts\nu1,1\n", [], r"pairs\.csv:1: header must name user_id and ts"),
        ("user_id,ts\nu1,nan\n", [], r"pairs\.csv:2: ts: 'nan' is not finite"),
        ("user_id,ts\nu1,2020-01-01T00:00:00\n", [], r"pairs\.csv:2: ts: .* has no UTC offset"),
        ("user_id,ts,vector\nu1,1,x\n", [], r"pairs\.csv:1: column 'vector' would collide"),
        ("", [], r"pairs\.csv: empty"),
        (
            "user_id,ts,seq\nu1,1,soon\n",
            ["--sequence-start-col", "seq"],
            r"pairs\.csv:2: seq: 'soon' is not a time",
        ),
        ("user_id,ts\nu1,1\n", ["--sequence-start-col", "seq"], r"no column 'seq'"),
        ("user_id,ts\nu1,1\n", ["--allow-overlap"], r"--allow-overlap needs --sequence-start"),
    ],
)
def test_bad_pairs_give_one_line_naming_file_and_line(
    inputs: tuple[BasisArtifact, Path, Path],
    tmp_path: Path,
    pairs: str,
    extra: list[str],
    message: str,
) -> None:
    _, basis_dir, log = inputs
    path = tmp_path / "pairs.csv"
    path.write_text(pairs, encoding="utf-8")
    code, _, err = invoke(
        [
            *("--log", str(log), "--at", str(path), "--basis", str(basis_dir)),
            *("--out", str(tmp_path / "o.jsonl"), *extra),
        ]
    )
    assert code == 1
    assert err.startswith("lte: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_bad_logs_and_outputs_are_refused_naming_the_file(
    inputs: tuple[BasisArtifact, Path, Path], tmp_path: Path
) -> None:
    _, basis_dir, _ = inputs
    pairs = write_pairs(tmp_path / "pairs.csv", ["u1,1"], header="user_id,ts")
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_bytes(b'{"user_id":"u1","item_id":"zz","ts":1}\n')
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"user_id":"u1","item_id":"i1","ts":1}\n{"user_id":"u1"}\n')
    cases = [
        (foreign, "o.jsonl", rf"{foreign}: none of its 1 events has an item of basis"),
        (broken, "o.jsonl", rf"{broken}:2: missing_field"),
        (foreign, "o.csv", r"--out: .*o\.csv must end in \.jsonl or \.parquet"),
    ]
    for log, out, message in cases:
        code, _, err = invoke(
            [
                *("--log", str(log), "--at", str(pairs), "--basis", str(basis_dir)),
                *("--out", str(tmp_path / out)),
            ]
        )
        assert code == 1 and err.count("\n") == 1, err
        assert re.search(message, err), err
