"""The worker keeps the root logger at its level (Faust's spinner would set it to DEBUG)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest

from streams.app import quiet_worker


@pytest.fixture
def root_at_warning() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.WARNING)
    root.handlers = [logging.NullHandler()]
    try:
        yield root
    finally:
        root.setLevel(level)
        root.handlers = handlers


def test_faust_s_own_worker_turns_the_root_logger_to_debug(root_at_warning: logging.Logger) -> None:
    """The behaviour :func:`quiet_worker` exists for (so the next test can fail)."""
    worker = faust.Worker(faust.App("lte-test-spinner"), loglevel="warning", quiet=True)
    worker.on_setup_root_logger(root_at_warning, logging.WARNING)
    assert root_at_warning.level == logging.DEBUG


def test_the_quiet_worker_keeps_the_root_logger_at_its_level(
    root_at_warning: logging.Logger,
) -> None:
    worker = quiet_worker(faust.App("lte-test-quiet"), "warning")
    worker.on_setup_root_logger(root_at_warning, logging.WARNING)
    assert root_at_warning.level == logging.WARNING
    assert not logging.getLogger("aiokafka.producer").isEnabledFor(logging.DEBUG)
    assert not [h for h in root_at_warning.handlers if type(h).__name__ == "SpinnerHandler"]
