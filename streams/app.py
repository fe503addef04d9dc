"""The worker as a Faust app: ``faust -A streams.app worker`` or ``lte worker``.

One agent over the input topic, with one in-order actor per partition
(``isolated_partitions``), drives the project's batched engine. The batch transport
(:mod:`streams.batch_transport`, URL scheme ``lte``) hands the agent each fetched partition
chunk as one event, so Faust costs a few microseconds per *batch* instead of ~88 µs per
record. Faust owns group membership, assignment and rebalances, acks and offset commits,
the sweeper and lag probes (app tasks) and the web server (``/metrics``, ``/healthz``,
``/readyz`` as Faust views on the worker's web port). The engine host
(:mod:`streams.engine_host`) owns state: RocksDB stores, the changelog, the emit order.

Acks are manual (``stream.noack()``): a batch is acked only after its updates, changelog
and local write are durable (:mod:`streams.partition`), so an exception never acks a batch
it did not finish — Faust's default acks in the iterator's ``finally``. Any failure in an
actor, a task or at assignment crashes the app: the worker stops (other actors cancelled
before the stores close) and exits non-zero.

``faust -A streams.app`` reads its configuration from the same ``LTE_*`` variables as
``lte worker``'s flags; the module attribute ``app`` is built on first access from them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
import threading
import time
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError
from faust.serializers.codecs import Codec
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from lte_runtime.heap import keep_freed_memory
from lte_runtime.kafka.settings import KafkaSettings
from streams.batch_transport import BatchConsumer, check_faust
from streams.engine_host import EngineHost, WorkerFailedError, every
from streams.fault_hook import crash_point
from streams.settings import WorkerSettings

log = logging.getLogger("lte.worker")
#: Offsets are committed at most this often (and at revocation and shutdown). A crash
#: redelivers what was processed since; per-user offsets turn that into duplicates.
COMMIT_INTERVAL_S = 0.5
#: Batches buffered per partition between the fetcher and the actor.
STREAM_BUFFER_BATCHES = 4
#: Backoff of the sweeper after a transient broker error: doubling, capped.
SWEEP_FIRST_BACKOFF_S = 0.2
SWEEP_MAX_BACKOFF_S = 5.0


class RecordBatchCodec(Codec):
    """The batch transport's message value is already the list of records: no decoding."""

    def _loads(self, s: Any) -> Any:
        return s

    def _dumps(self, s: Any) -> Any:
        return s


class LteApp(faust.App):
    """A Faust app that starts and stops the engine host around Faust's own services."""

    host: EngineHost
    fetch_max_wait_ms: int
    batch_max_records: int
    #: set by the first :meth:`fail`: whoever else recorded the error first (the host does,
    #: for a partition that cannot be opened), the first call here still arms the exit timer
    _failing: bool = False

    async def on_start(self) -> None:
        # here, not in run_worker: `faust -A streams.app worker` starts the app too
        keep_freed_memory()
        # before Faust's children (consumer, agents) start: topics exist, producer is up
        await self.host.start()
        await super().on_start()

    async def on_shutdown(self) -> None:
        # after Faust stopped its children: no actor or task touches a store any more
        await super().on_shutdown()
        await self.host.stop()

    async def fail(self, exc: BaseException) -> None:
        """Crash-only: remember the first error and bring the whole worker down. Batches in
        flight will never be acked and nothing more is committed: Faust's orderly stop must
        wait for neither (:meth:`BatchConsumer.abandon`)."""
        first = not self._failing
        self._failing = True
        self.host.failed(exc)
        cast(BatchConsumer, self.consumer).abandon()
        if first:
            log.error("worker failed: %s", exc)
            _exit_unless_stopped_within(CRASH_STOP_GRACE_S, exc)
            await self.crash(exc)


#: How long a crashed worker may take to stop in order before it exits anyway.
CRASH_STOP_GRACE_S = 20.0


def _exit_unless_stopped_within(seconds: float, exc: BaseException) -> None:
    """Crash-only, whatever Faust's shutdown does: after a fatal error the process exits 1
    within ``seconds`` even if an orderly stop hangs. A backstop, not the expected path: the
    hangs seen (Faust's stop committing and re-subscribing through a consumer thread that
    had already stopped with the crash) are prevented by :meth:`BatchConsumer.abandon`, and
    a test fails if this fires. Abandoning the stop is safe by construction: every local
    write is one atomic batch made after the changelog acknowledged it, and nothing in flight
    was acked, so a restart redoes exactly what was not finished. A timer thread, not a
    task, so that a blocked event loop cannot hold it back."""

    def hard_exit() -> None:
        sys.stderr.write(
            f"lte: error: {exc} (the worker did not stop within {seconds:.0f} s; exiting)\n"
        )
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()


def broker_urls(kafka: KafkaSettings) -> str:
    """``host:port[,host:port]`` as the batch transport's URL list."""
    return ";".join(f"lte://{server}" for server in kafka.servers)


def faust_credentials(kafka: KafkaSettings) -> Any:
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = kafka.client_kwargs().get("ssl_context")
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password,
        mechanism=kafka.sasl_mechanism,
        ssl_context=context,
    )


def create_app(settings: WorkerSettings, host: EngineHost | None = None) -> LteApp:
    check_faust()
    host = host or EngineHost(settings)
    s = settings
    s.state_dir.mkdir(parents=True, exist_ok=True)  # Faust keeps its datadir inside
    session_s = s.session_timeout_ms / 1000
    app = LteApp(
        s.group_id,
        broker=broker_urls(s.kafka),
        broker_credentials=faust_credentials(s.kafka),
        broker_client_id=s.kafka.client_id,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(1.0, session_s / 5),
        broker_commit_interval=COMMIT_INTERVAL_S,
        broker_max_poll_records=s.batch_max_records * s.partitions,
        consumer_max_fetch_size=16 << 20,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=STREAM_BUFFER_BATCHES,
        store="memory://",
        datadir=str(s.state_dir / "faust"),
        topic_allow_declare=False,
        topic_disable_leader=True,
        table_standby_replicas=0,
        web_enabled=True,
        web_host=s.metrics_host,
        web_port=s.metrics_port,
        autodiscover=False,
    )
    app.host = host
    app.fetch_max_wait_ms = s.kafka.fetch_max_wait_ms
    app.batch_max_records = s.batch_max_records
    _add_engine_agent(app, host)
    _add_tasks(app, host)
    _add_rebalance_handlers(app, host)
    _add_views(app, host)
    return app


def _add_engine_agent(app: LteApp, host: EngineHost) -> None:
    codec = RecordBatchCodec()
    interactions = app.topic(
        host.settings.topics.interactions, key_serializer=codec, value_serializer=codec, acks=True
    )

    @app.agent(interactions, name="lte-engine", isolated_partitions=True)
    async def engine(stream: Any) -> None:
        async for event in stream.noack().events():
            message = event.message
            try:
                await host.process(message.partition, message.value)
                crash_point("before_ack")
            except Exception as exc:
                # the app crashes; this actor ends without acking (Faust's supervisor
                # would restart a raising actor, skipping the batch)
                await app.fail(exc)
                return
            app.consumer.ack(message)


def _add_tasks(app: LteApp, host: EngineHost) -> None:
    settings = host.settings

    @app.task  # type: ignore[untyped-decorator]
    async def sweeper() -> None:
        """Due-time sweep: windows slide by the clock even for silent users. A transient
        broker error (the broker paused, a leader moving) is retried with a growing backoff
        and counted; anything else crashes the worker (crash-only)."""
        tick = 0
        backoff = SWEEP_FIRST_BACKOFF_S
        host.metrics.sweep_last_success.set(time.time())
        while not app.should_stop:
            host.sweeper_heartbeat.beat()
            await every(settings.sweep_interval, host.sweep_wakeup)
            try:
                await host.sweep()
            except KafkaError as exc:
                host.metrics.task_retries.labels("sweeper").inc()
                log.warning("sweep failed (%r); retrying in %.1fs", exc, backoff)
                host.sweeper_heartbeat.beat()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, SWEEP_MAX_BACKOFF_S)
                continue
            except Exception as exc:
                await app.fail(exc)
                raise
            backoff = SWEEP_FIRST_BACKOFF_S
            host.metrics.sweep_last_success.set(time.time())
            tick += 1
            if tick % 10 == 1:
                host.publish_state_bytes()

    @app.task  # type: ignore[untyped-decorator]
    async def stall_ticker() -> None:
        """Lets every write notice a freeze of the whole process (:class:`StallGuard`)."""
        await host.stall_guard.run()

    @app.timer(COMMIT_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def lag_probe() -> None:
        """``lte_consumer_lag``; a probe that fails mid-rebalance is only skipped."""
        try:
            await host.observe_lag(app.consumer)
        except Exception as exc:
            log.debug("consumer lag not observed this time: %r", exc)


def _add_rebalance_handlers(app: LteApp, host: EngineHost) -> None:
    async def on_revoked(_: Any, /, *args: Any, signal: Any, **__: Any) -> None:
        await host.revoke(args[0])

    async def on_assigned(_: Any, /, *args: Any, signal: Any, **__: Any) -> None:
        try:
            await host.assign(args[0])
        except Exception as exc:
            await app.fail(exc)
            raise

    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_assigned)


def _add_views(app: LteApp, host: EngineHost) -> None:
    @app.page("/metrics")
    async def metrics(view: Any, request: Any) -> Any:
        return view.bytes(
            generate_latest(host.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @app.page("/healthz")
    async def healthz(view: Any, request: Any) -> Any:
        alive, reason = host.liveness()
        if not alive:
            return view.json({"status": "failed", "reason": reason}, status=503)
        return view.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(view: Any, request: Any) -> Any:
        ok, reason = host.readiness()
        return view.json(
            {"status": "ready" if ok else "not_ready", "reason": reason}, status=200 if ok else 503
        )


def quiet_worker(app: faust.App, log_level: str) -> faust.Worker:
    """A Faust worker for ``app`` without Faust's start-up spinner.

    At a level of ``warning`` or above, Faust's worker sets the root logger to ``DEBUG`` so
    that every record turns its terminal spinner, and never sets it back: every
    ``log.debug`` of aiokafka, mode and Faust then builds a record (``findCaller``
    included) that no handler prints, one or more per produce request: 2% of the worker's
    thread at d=384 (py-spy on ``bench.runtimes``). Without the spinner the root logger
    stays at ``log_level``."""
    worker = faust.Worker(app, loglevel=log_level, quiet=True, redirect_stdouts=False)
    worker.spinner = None
    return worker


def run_worker(settings: WorkerSettings) -> None:
    """Run the app under a Faust worker until SIGTERM/SIGINT; a failure that crashed it is
    raised as :class:`WorkerFailedError` (one line at the command line, exit 1)."""
    app = create_app(settings)
    worker = quiet_worker(app, settings.log_level)
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        if app.host.fatal is not None:
            raise WorkerFailedError(str(app.host.fatal)) from None
        if exit_.code:
            raise


def __getattr__(name: str) -> Any:
    """``app`` for ``faust -A streams.app``, built once from the ``LTE_*`` variables."""
    if name != "app":
        raise AttributeError(name)
    built = globals().get("_app")
    if built is None:
        from lte_cli.worker_cmd import settings_from_environment  # noqa: PLC0415

        built = globals()["_app"] = create_app(settings_from_environment())
    return built
