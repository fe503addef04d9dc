"""Errors of the process plumbing."""

from __future__ import annotations

from lte_core.errors import LTEError


class ServiceError(LTEError):
    """A local service (the embedded broker, a Redis server, a child process) cannot be
    started or does not answer."""


class BrokerError(ServiceError):
    """The embedded broker cannot be started, or a Kafka broker cannot be reached."""


class TaskDiedError(LTEError):
    """A supervised task raised an error it does not handle: the process stops
    (:mod:`lte_runtime.crash_only`)."""
