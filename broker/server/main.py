"""Start-up and shutdown: lock the data directory, recover, write the boot
record, listen, and stop cleanly on SIGTERM/SIGINT — or fail-stop when the
journal cannot be written.

Start-up log lines: recovery (snapshot, records replayed, time and replay
speed, anything cut or moved), the new epoch, the listening address. Clean
shutdown: stop accepting, answer held fetches, flush the journal, close
connections, write a snapshot from the live state, exit 0. A failed write
or fsync: every waiting and later request gets ``journal_failed``, the
error (path, errno, last durable seq) is logged, and the broker exits with
status 75 (EX_TEMPFAIL) within ``FAIL_STOP_S`` so that a supervisor
restarts it from what is on disk.
"""

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence

import msgspec

from leash.broker import core
from leash.broker.core.limits import seeded_limits
from leash.broker.core.records import QueueLimitsSet
from leash.broker.errors import BrokerError
from leash.broker.journal import datadir, layout
from leash.broker.journal.compaction import Compactor, run_snapshotter
from leash.broker.journal.disk import Disk, OsDisk
from leash.broker.journal.log import Journal, JournalFailure
from leash.broker.journal.recovery import JournalCorrupt, Recovered, recover
from leash.broker.journal.scheduler import LoopScheduler
from leash.broker.journal.space import SpaceWatch
from leash.broker.server.admin import AdminConnection, AdminSocketError, bind_admin_socket
from leash.broker.server.broker import Broker, Replayed, wall_clock_ms
from leash.broker.server.config import ServerConfig
from leash.broker.server.connection import Connection
from leash.broker.server.faktory import FaktoryFront
from leash.broker.server.metrics import MetricsRegistry, start_metrics
from leash.broker.server.security import Security, SecurityError, prepare

log = logging.getLogger("leash")
EXIT_OK, EXIT_CONFIG, EXIT_JOURNAL_FAILED = 0, 78, 75
FAIL_STOP_S = 1.5  # after a journal failure, the process is gone within this (plus exit)


class StartupError(BrokerError):
    pass


def lock_data_dir(data_dir: str) -> int:
    try:
        return datadir.lock(data_dir)
    except datadir.Locked as locked:
        raise StartupError(str(locked)) from None


def recover_state(config: ServerConfig, disk: Disk) -> Recovered:
    started = time.perf_counter()
    gc.disable()  # replay allocates millions of objects that all stay alive
    try:
        recovered = recover(config.data_dir, disk, config.core, repair=config.repair_truncate)
    except JournalCorrupt as error:
        raise StartupError(f"journal is corrupt: {error}") from None
    finally:
        # What recovery built lives as long as its jobs: keep it out of the
        # collector's full passes, which would stall the event loop.
        gc.freeze()
        gc.enable()
    _log_recovery(recovered, time.perf_counter() - started)
    return recovered


def _log_recovery(recovered: Recovered, elapsed_s: float) -> None:
    for note in recovered.notes:
        log.warning("%s", note)
    rate = ""
    if recovered.records:
        per_second = recovered.records / max(recovered.replay_s, 1e-9)
        rate = f" ({per_second:,.0f} records/s, {1e6 / per_second:.2f} s per million)"
    base = recovered.snapshot
    log.info(
        "recovered %d jobs in %.3f s: snapshot %s (%.3f s) + %d records replayed in %.3f s%s; "
        "last seq %d",
        len(recovered.state.jobs),
        elapsed_s,
        base.path if base else "none",
        recovered.snapshot_s,
        recovered.records,
        recovered.replay_s,
        rate,
        recovered.next_seq - 1,
    )


def open_epoch(
    recovered: Recovered, journal: Journal, queue_limits: Sequence[QueueLimitsSet] = ()
) -> None:
    """Write and sync the boot record before serving, under every fsync
    policy, so tokens and broker-made ids never repeat; with it, the
    limits the configuration gives queues, where they differ from the
    journalled ones (core/limits.py)."""
    state = recovered.state
    booted = core.boot(state, wall_clock_ms())
    if recovered.epoch_floor >= booted.epoch:  # a repair dropped later boots
        booted = msgspec.structs.replace(booted, epoch=recovered.epoch_floor + 1)
    core.apply(state, booted)
    seeded = seeded_limits(state, queue_limits)
    for record in seeded:
        core.apply(state, record)
    last = recovered.segments[-1] if recovered.segments else None
    journal.open(recovered.next_seq, last, booted.epoch)
    journal.write_now([booted, *seeded])
    log.info("epoch %d", booted.epoch)


def tidy(disk: Disk, recovered: Recovered) -> None:
    """Once the new epoch is durable: remove what the snapshot covers, set
    damaged snapshots aside."""
    try:
        for path in recovered.obsolete:
            disk.remove(path)
        for path in recovered.set_aside:
            disk.rename(path, path + layout.BROKEN_SUFFIX)
    except OSError as error:  # harmless: recovery ignores such files next time too
        log.warning("could not tidy the data directory: %s", error)


async def serve(
    config: ServerConfig,
    disk: Disk | None = None,
    on_listening: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the broker until SIGTERM/SIGINT (or ``stop`` is set) or a journal
    failure: the exit status. ``disk`` is the journal's seam; tests pass a
    faulty one, and ``on_listening`` tells them the port."""
    disk = disk or OsDisk()
    try:
        security = prepare(config)
    except SecurityError as error:
        raise StartupError(str(error)) from None
    lock_fd = lock_data_dir(config.data_dir)
    try:
        # A socket there is stale: we hold the lock.
        admin_sock = bind_admin_socket(config.admin_socket_path(), config.admin_uids)
    except (AdminSocketError, OSError) as error:
        os.close(lock_fd)
        raise StartupError(f"cannot create the admin socket: {error}") from None
    try:
        recovered = recover_state(config, disk)
        journal = Journal(config.data_dir, disk, config.segment_bytes)
        try:
            open_epoch(recovered, journal, config.queue_limits)
        except JournalFailure as failure:
            log.critical("cannot write the boot record: %s", failure)
            journal.close()
            return EXIT_JOURNAL_FAILED
        tidy(disk, recovered)
        return await _run(
            config, disk, recovered, journal, security, admin_sock, on_listening, stop
        )
    finally:
        admin_sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.admin_socket_path())
        os.close(lock_fd)


async def _run(
    config: ServerConfig,
    disk: Disk,
    recovered: Recovered,
    journal: Journal,
    security: Security,
    admin_sock: socket.socket,
    on_listening: Callable[[int], None] | None,
    stop: asyncio.Event | None,
) -> int:
    loop = asyncio.get_running_loop()
    running = _Running(config, disk, recovered, journal, security, stop or asyncio.Event())
    for signum in (signal.SIGTERM, signal.SIGINT):  # before anyone can know we are up
        loop.add_signal_handler(signum, running.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(security))
    first_read = loop.create_future()
    running.space.start(lambda: first_read.set_result(None))
    await first_read  # the free space is known before anyone is served
    tls_timeout_s = config.limits.tls_handshake_timeout_ms / 1000 if security.tls else None
    server = await loop.create_server(
        lambda: Connection(running.broker),
        config.host,
        config.port,
        backlog=1024,
        ssl=security.tls,
        ssl_handshake_timeout=tls_timeout_s,
    )
    faktory = await _faktory_server(config, security, running.broker)
    allowed_uids = frozenset({os.getuid(), 0, *config.admin_uids})
    admin_server = await loop.create_unix_server(
        lambda: AdminConnection(running.broker, allowed_uids), sock=admin_sock
    )
    log.info("admin socket %s", config.admin_socket_path())
    metrics = None
    if running.metrics is not None:
        metrics = start_metrics(running.broker, config, running.metrics)
    log.info("%s", config.limits.describe(config.max_frame_bytes))
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        tls = "TLS" if security.tls else "plain TCP"
        log.info("listening on %s:%d (%s, fsync %s)", host, port, tls, config.fsync.text())
        if on_listening is not None:
            on_listening(port)
    running.broker.apply_config_schedules(config.schedules)
    running.broker.run_tick()  # leases and schedules that came due while we were down
    running.compactor.maybe_start()  # a tail left long by a crash
    await running.stopping.wait()
    log.info("shutting down")
    server.close()
    if faktory is not None:
        faktory.close()
    admin_server.close()
    if metrics is not None:
        metrics.stop()
    exit_code = await running.shut_down()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(signum)
    log.info("stopped (exit %d)", exit_code)
    return exit_code


def _reload(security: Security) -> None:
    """SIGHUP: read the key file and the Faktory password file again."""
    if security.keyring is not None:
        security.keyring.reload()
    security.passwords.reload()


async def _faktory_server(
    config: ServerConfig, security: Security, broker: Broker
) -> asyncio.Server | None:
    """The Faktory port's listener, when --faktory-port asks for one."""
    if config.faktory_port is None:
        return None
    front = FaktoryFront(broker, security.passwords, config.faktory_allow_mutate)
    tls_timeout_s = config.limits.tls_handshake_timeout_ms / 1000 if security.tls else None
    server = await asyncio.get_running_loop().create_server(
        front.connection,
        config.host,
        config.faktory_port,
        backlog=1024,
        ssl=security.tls,
        ssl_handshake_timeout=tls_timeout_s,
    )
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        password = "a password" if security.passwords.required else "no password"
        mutate = "for every client" if config.faktory_allow_mutate else "for admin keys only"
        log.info(
            "faktory protocol on %s:%d (%s, %s; MUTATE and FLUSH %s)",
            host,
            port,
            "TLS" if security.tls else "plain TCP",
            password,
            mutate,
        )
    return server


class _Running:
    """The parts of a running broker, wired together."""

    def __init__(
        self,
        config: ServerConfig,
        disk: Disk,
        recovered: Recovered,
        journal: Journal,
        security: Security,
        stopping: asyncio.Event,
    ) -> None:
        self.stopping = stopping
        self.exit_code = EXIT_OK
        self.metrics = MetricsRegistry() if config.metrics_port is not None else None
        self.state = recovered.state
        self.journal = journal
        scheduler = LoopScheduler(asyncio.get_running_loop())
        self.space = SpaceWatch(
            disk,
            config.data_dir,
            config.low_watermark_bytes,
            lambda: journal.appended_bytes,
            config.space_check_ms,
            scheduler=scheduler,
        )
        # A snapshot may use half the room under the watermark, never more:
        # the rest is for the journal's records while pushes are refused.
        keep_free_bytes = config.low_watermark_bytes // 2
        self.compactor = Compactor(
            config.data_dir,
            disk,
            journal,
            recovered,
            config.snapshot_min_bytes,
            functools.partial(run_snapshotter, keep_free_bytes=keep_free_bytes),
            reserve=self.space.reserve,
            scheduler=scheduler,
        )
        self.broker = Broker(
            config,
            recovered.state,
            journal,
            on_journal_failed=self._journal_failed,
            compactor=self.compactor,
            space=self.space,
            replayed=Replayed(recovered.snapshot_s + recovered.replay_s, recovered.records),
            keyring=security.keyring,
            on_fsync=self.metrics.fsync.observe if self.metrics is not None else None,
            scheduler=scheduler,
        )
        self.committer = self.broker.committer

    def _journal_failed(self, error: BaseException) -> None:
        self.exit_code = EXIT_JOURNAL_FAILED
        log.critical("exiting with status %d: %s", EXIT_JOURNAL_FAILED, error)
        self.stopping.set()

    async def shut_down(self) -> int:
        """Answer what waits, flush the journal, snapshot if all is well."""
        self.space.stop()
        self.broker.stop()
        await self.compactor.stop()
        try:
            await asyncio.wait_for(self.committer.close(), FAIL_STOP_S)
        except TimeoutError:
            log.critical("the journal writer did not stop within %.1f s", FAIL_STOP_S)
            self.exit_code = EXIT_JOURNAL_FAILED
        await asyncio.sleep(0)  # let transports flush their last replies
        if self.exit_code == EXIT_OK:
            self.exit_code = _final_snapshot(self.compactor, self.state)
        self.journal.close()
        return self.exit_code


def _final_snapshot(compactor: Compactor, state: core.State) -> int:
    """Snapshot at a clean stop. Sealing the journal failed: 75, as any
    journal failure. Writing the snapshot failed (a full disk): the journal
    is whole and the next start replays it, so the stop is still clean."""
    started = time.perf_counter()
    try:
        compactor.snapshot_now(state)
    except JournalFailure as failure:
        log.critical("the shutdown snapshot could not seal the journal: %s", failure)
        return EXIT_JOURNAL_FAILED
    except OSError as error:
        log.error(
            "the shutdown snapshot failed (%s); the journal is intact and the next start "
            "replays it",
            error,
        )
        return EXIT_OK
    log.info("shutdown snapshot in %.3f s", time.perf_counter() - started)
    return EXIT_OK
