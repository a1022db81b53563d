"""Start-up and shutdown: lock the data directory, replay the journal,
write the boot record, listen, and stop cleanly on SIGTERM/SIGINT.

Start-up log lines: recovery summary (records, time, torn tail if any),
the new epoch, the listening address. Shutdown: stop accepting, answer held
fetches, flush the journal, close connections, exit 0.
"""

import asyncio
import fcntl
import gc
import logging
import os
import signal
import time

from broker import core
from broker.journal.disk import OsDisk
from broker.journal.group_commit import GroupCommitter
from broker.journal.log import Journal, JournalCorrupt
from broker.server.broker import Broker, wall_clock_ms
from broker.server.config import ServerConfig
from broker.server.connection import Connection
from broker.server.security import SecurityError, prepare

log = logging.getLogger("leash")
EXIT_OK, EXIT_CONFIG, EXIT_JOURNAL_FAILED = 0, 78, 75


class StartupError(Exception):
    pass


def lock_data_dir(data_dir: str) -> int:
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    os.chmod(data_dir, 0o700)
    fd = os.open(os.path.join(data_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StartupError(f"data directory {data_dir} is locked by pid {holder}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def recover(config: ServerConfig, journal: Journal) -> core.State:
    state = core.State(config.core)
    started = time.perf_counter()
    gc.disable()  # replay allocates millions of objects that all stay alive
    try:
        recovered = journal.recover(lambda record: core.apply(state, record))
    except JournalCorrupt as error:
        raise StartupError(f"journal is corrupt: {error}") from None
    finally:
        gc.enable()
    elapsed_s = time.perf_counter() - started
    log.info(
        "recovered %d records (last seq %d) in %.3f s: %d jobs%s",
        recovered.records,
        recovered.last_seq,
        elapsed_s,
        len(state.jobs),
        f"; {recovered.dropped}" if recovered.dropped else "",
    )
    return state


def open_epoch(state: core.State, journal: Journal) -> None:
    """Write and sync the boot record before serving, under every fsync
    policy, so tokens and broker-made ids never repeat."""
    booted = core.boot(state, wall_clock_ms())
    core.apply(state, booted)
    journal.open_for_append(booted.epoch)
    journal.append(journal.encode([booted]))
    journal.sync()
    log.info("epoch %d", booted.epoch)


async def serve(config: ServerConfig) -> int:
    loop = asyncio.get_running_loop()
    try:
        security = prepare(config)
    except SecurityError as error:
        raise StartupError(str(error)) from None
    lock_fd = lock_data_dir(config.data_dir)
    journal = Journal(config.data_dir, OsDisk())
    state = recover(config, journal)
    open_epoch(state, journal)
    stopping = asyncio.Event()
    exit_code = EXIT_OK

    def journal_failed(error: BaseException) -> None:
        nonlocal exit_code
        exit_code = EXIT_JOURNAL_FAILED
        stopping.set()

    committer = GroupCommitter(loop, journal, config.fsync, journal_failed)
    broker = Broker(config, state, journal, committer, keyring=security.keyring)
    tls_timeout_s = config.limits.tls_handshake_timeout_ms / 1000 if security.tls else None
    server = await loop.create_server(
        lambda: Connection(broker),
        config.host,
        config.port,
        backlog=1024,
        ssl=security.tls,
        ssl_handshake_timeout=tls_timeout_s,
    )
    log.info("%s", config.limits.describe(config.max_frame_bytes))
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        tls = "TLS" if security.tls else "plain TCP"
        log.info("listening on %s:%d (%s, fsync %s)", host, port, tls, _policy_text(config))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if security.keyring is not None:
        loop.add_signal_handler(signal.SIGHUP, security.keyring.reload)
    broker.run_tick()  # leases and schedules that came due while we were down
    await stopping.wait()
    log.info("shutting down")
    server.close()
    broker.stop()
    await committer.close()
    await asyncio.sleep(0)  # let transports flush their last replies
    journal.close()
    os.close(lock_fd)
    log.info("stopped (exit %d)", exit_code)
    return exit_code


def _policy_text(config: ServerConfig) -> str:
    policy = config.fsync
    return f"interval:{policy.interval_ms}" if policy.mode == "interval" else policy.mode
