"""``python -m offline.experiment.planted DIR``: write the planted-taste log (JSON lines) and
its basis artifact, the inputs of ``lte experiment --log DIR/log.jsonl --basis DIR/basis
--max-len 5``."""

from __future__ import annotations

import sys
from pathlib import Path

from offline.datasets import write_interactions_jsonl
from offline.synthetic import PlantedTasteSpec, planted_taste


def write_planted_taste(directory: Path, spec: PlantedTasteSpec | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    log, catalog = planted_taste(spec or PlantedTasteSpec())
    catalog.basis().save(directory / "basis")
    return write_interactions_jsonl(log, directory / "log.jsonl")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m offline.experiment.planted DIR")
    print(write_planted_taste(Path(sys.argv[1])))
