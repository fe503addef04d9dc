"""The experiment's only door to LTEs: point-in-time snapshots (``lte snapshot``'s API) on a
log re-timed by item position, and the leakage rule they must obey (DESIGN 3.5b).

Every LTE the experiment trains or evaluates on comes from :func:`point_in_time`, so the run
is also a check that training data equals what the stream serves. ML-100K needs lags and
windows counted in *items* (the median user's history spans 0 days and half of consecutive
interactions share a timestamp), so :func:`positional_log` re-times each user's events by
their ordinal position (tie-break: time, then file order) and the snapshot runs with bucket
``G = 1``, window ``W = window_items`` and lag ``L = lag_items``: the same code path as a
time-based snapshot, with positions for seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec
from lte_core.errors import LTEError
from lte_core.window import WindowSpec
from offline.datasets import InteractionLog
from offline.snapshot import Snapshot, point_in_time

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class LeakageError(LTEError):
    """An LTE window reaches into the model's input sequence (DESIGN 3.5b)."""


def positional_log(
    user_ids: npt.NDArray[np.str_], item_ids: npt.NDArray[np.str_], position: I64
) -> InteractionLog:
    """A log whose event time is the event's ordinal position in its user's history."""
    return InteractionLog(
        user_ids=user_ids,
        item_ids=item_ids,
        ts=position.astype(np.float64),
        weights=np.ones(len(position), dtype=np.float64),
    )


@dataclass(frozen=True, slots=True)
class LTERequest:
    """Where the LTE is taken: at position ``clock`` (the first input item for a lagged LTE,
    the prediction position for an unlagged one), lag and window in items."""

    window_items: int
    lag_items: int
    encoder: EncoderSpec


def lte_features(
    log: InteractionLog,
    users: npt.NDArray[np.str_],
    clock: I64,
    first_input: I64,
    *,
    request: LTERequest,
    basis: BasisArtifact,
    allow_leak: bool = False,
) -> Snapshot:
    """Point-in-time LTEs for ``(users[i], clock[i])`` on a positional log, refused when a
    window ends after the first input position ``first_input[i]`` unless ``allow_leak``
    (the ``prefix_unlagged`` variant, which exists to show the leak)."""
    window = WindowSpec(window=request.window_items, lag=request.lag_items, bucket=1)
    snap = point_in_time(
        log, users, clock.astype(np.float64), basis=basis, window=window, encoder=request.encoder
    )
    if not allow_leak:
        check_no_leak(snap.window_end, first_input)
    return snap


def check_no_leak(window_end: F64, first_input: I64) -> None:
    """DESIGN 3.5b: the input sequence starts at or after the LTE window's end."""
    bad = np.flatnonzero(window_end > first_input.astype(np.float64))
    if len(bad):
        i = int(bad[0])
        raise LeakageError(
            f"{len(bad)} LTE window(s) overlap their input sequence (first: window ends at "
            f"position {window_end[i]:.0f}, input starts at {first_input[i]}); take lagged "
            "LTEs at the first input position"
        )
