"""torch is an extra: the stream's commands must not import it, training commands must say
how to get it when it is missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from lte_cli.torch_extra import TorchMissingError, require_torch


def test_the_command_line_and_the_stream_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import lte_cli.main, lte_cli.demo_cmd, lte_cli.worker_cmd, lte_cli.refresher_cmd\n"
        "import streams.app, streams.engine_host, serving.refresher, serving.read_api\n"
        "import offline.snapshot\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_a_missing_torch_is_a_one_line_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TorchMissingError, match=r"lte-stream\[offline\]") as caught:
        require_torch("experiment")
    assert "`lte experiment`" in str(caught.value)
    assert "\n" not in str(caught.value)
