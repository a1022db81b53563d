"""``python -m leash.broker serve`` (also ``leash serve``): parse flags, run.
``python -m leash.broker journal verify|dump|compact DIR`` (also ``leash journal``):
the offline journal tools (broker/journal/tools.py)."""

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable

from leash.broker.core.config import CoreConfig
from leash.broker.journal import tools
from leash.broker.journal.compaction import DEFAULT_SNAPSHOT_MIN_BYTES
from leash.broker.journal.group_commit import FsyncPolicy
from leash.broker.journal.log import DEFAULT_SEGMENT_BYTES
from leash.broker.server.config import DEFAULT_PORT, ServerConfig
from leash.broker.server.limits import Limits
from leash.broker.server.main import EXIT_CONFIG, EXIT_JOURNAL_FAILED, StartupError, serve
from leash.protocol.limits import (
    FRAME_CEILING_BYTES,
    FRAME_MAX_BYTES,
    HANDSHAKE_FRAME_MAX_BYTES,
    HEARTBEAT_MAX_MS,
    HEARTBEAT_MIN_MS,
    IDLE_TIMEOUT_HEARTBEATS,
)

_CORE = CoreConfig()
BATCH_RETENTION_MAX_MS = 10 * 365 * 24 * 3600 * 1000  # ten years
_LIMITS = Limits()
_HOUR_MS = 3_600_000
_TIMEOUT_MIN_MS = 50
SEGMENT_MIN_BYTES = 1024
SIZE_MAX_BYTES = 1 << 50
_TOOLS = {"verify": tools.verify, "dump": tools.dump, "compact": tools.compact}


def _frame_limit(text: str) -> int:
    value = int(text)
    if not HANDSHAKE_FRAME_MAX_BYTES <= value <= FRAME_CEILING_BYTES:
        raise argparse.ArgumentTypeError(
            f"must be between {HANDSHAKE_FRAME_MAX_BYTES} and {FRAME_CEILING_BYTES}"
        )
    return value


def _fsync(text: str) -> FsyncPolicy:
    try:
        return FsyncPolicy.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _bounded(low: int, high: int) -> "Callable[[str], int]":
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="leash", description="The Leash job broker.")
    commands = top.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the broker")
    serve_cmd.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    serve_cmd.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="TCP port; 0 picks a free one"
    )
    serve_cmd.add_argument("--data-dir", default="./leash-data", help="journal directory")
    serve_cmd.add_argument(
        "--fsync",
        type=_fsync,
        default=FsyncPolicy("always"),
        help="always (default): reply after fsync | interval:MS | never",
    )
    serve_cmd.add_argument(
        "--max-frame-bytes", type=_frame_limit, default=FRAME_MAX_BYTES, help="largest request body"
    )
    serve_cmd.add_argument("--dead-max-jobs", type=_positive, default=_CORE.dead_max_jobs)
    serve_cmd.add_argument(
        "--dead-max-age-s", type=_positive, default=_CORE.dead_max_age_ms // 1000
    )
    serve_cmd.add_argument(
        "--heartbeat-ms",
        type=_bounded(HEARTBEAT_MIN_MS, HEARTBEAT_MAX_MS),
        default=_CORE.heartbeat_ms,
        help="how often workers beat (default 5000)",
    )
    serve_cmd.add_argument(
        "--process-ttl-ms",
        type=_bounded(HEARTBEAT_MIN_MS, 3_600_000),
        default=_CORE.process_ttl_ms,
        help="a process with no sign of life for this long is dead (default 15000)",
    )
    serve_cmd.add_argument(
        "--reconnect-grace-ms",
        type=_bounded(0, 3_600_000),
        default=_CORE.reconnect_grace_ms,
        help="a process with no connection for this long is dead (default 2000)",
    )
    serve_cmd.add_argument(
        "--restart-grace-ms",
        type=_bounded(0, 3_600_000),
        default=_CORE.restart_grace_ms,
        help="after a restart, a process known from before that is not back by then is dead "
        "(default 3000)",
    )
    serve_cmd.add_argument(
        "--lost-leases-max",
        type=_bounded(1, 1000),
        default=_CORE.lost_leases_max,
        help="a job whose lease is lost (expired, worker dead) this many times in a row is dead "
        "(default 3)",
    )
    serve_cmd.add_argument(
        "--terminate-grace-ms",
        type=_bounded(0, 3_600_000),
        default=_CORE.terminate_grace_ms,
        help="after terminate, the broker releases what is still leased (default 25000)",
    )
    serve_cmd.add_argument(
        "--batch-open-timeout-ms",
        type=_bounded(1, BATCH_RETENTION_MAX_MS),
        default=_CORE.batch_open_timeout_ms,
        help="an open batch not committed by then is abandoned (default 1800000, 30 min)",
    )
    serve_cmd.add_argument(
        "--batch-retention-ms",
        type=_bounded(1, BATCH_RETENTION_MAX_MS),
        default=_CORE.batch_finished_retention_ms,
        help="a finished or abandoned batch is kept this long (default 86400000, 24 h)",
    )
    serve_cmd.add_argument(
        "--batch-unfinished-retention-ms",
        type=_bounded(1, BATCH_RETENTION_MAX_MS),
        default=_CORE.batch_unfinished_retention_ms,
        help="an unfinished batch is removed after this long (default 2592000000, 30 days)",
    )
    _journal_flags(serve_cmd)
    serve_cmd.add_argument(
        "--admin-socket",
        default="",
        help="the admin socket's path (default DATA_DIR/admin.sock; at most 107 bytes)",
    )
    serve_cmd.add_argument(
        "--admin-uid",
        type=_bounded(0, 2**32 - 1),
        action="append",
        default=[],
        help="a uid allowed on the admin socket besides the broker's own and root (repeatable)",
    )
    serve_cmd.add_argument(
        "--metrics-port",
        type=_bounded(0, 65535),
        default=None,
        help="serve Prometheus metrics over HTTP on this port (default: off; 0 picks one)",
    )
    serve_cmd.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of the metrics port (127.0.0.1)"
    )
    serve_cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    _add_security_flags(serve_cmd)
    _add_limit_flags(serve_cmd)
    journal_cmd = commands.add_parser("journal", help="offline journal tools")
    journal_cmd.add_argument("tool", choices=sorted(_TOOLS), help="verify, dump or compact")
    journal_cmd.add_argument("dir", help="the data directory")
    return top


def _journal_flags(serve_cmd: argparse.ArgumentParser) -> None:
    serve_cmd.add_argument(
        "--segment-bytes",
        type=_bounded(SEGMENT_MIN_BYTES, SIZE_MAX_BYTES),
        default=DEFAULT_SEGMENT_BYTES,
        help="start a new journal segment past this size (default 64 MiB)",
    )
    serve_cmd.add_argument(
        "--snapshot-min-bytes",
        type=_bounded(0, SIZE_MAX_BYTES),
        default=DEFAULT_SNAPSHOT_MIN_BYTES,
        help="snapshot when the journal since the last snapshot holds more than "
        "max(this, the last snapshot's size) (default 64 MiB)",
    )
    serve_cmd.add_argument(
        "--disk-low-bytes",
        type=_bounded(0, SIZE_MAX_BYTES),
        default=0,
        help="refuse pushes with disk_full under this much free space "
        "(default max(256 MiB, 4 segments))",
    )
    serve_cmd.add_argument(
        "--repair-truncate",
        action="store_true",
        help="cut a damaged journal at its first bad record, keeping the valid prefix "
        "(the rest is kept in .broken / .cut files and the loss logged)",
    )


def _add_security_flags(serve_cmd: argparse.ArgumentParser) -> None:
    group = serve_cmd.add_argument_group("security (see README: Security)")
    group.add_argument(
        "--key-file",
        metavar="PATH",
        help="keys clients must prove they hold (TOML, mode 0600; leash keygen)",
    )
    group.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback --host without --key-file (anyone who can connect is trusted)",
    )
    group.add_argument("--tls-cert", metavar="PATH", help="PEM certificate chain: speak TLS")
    group.add_argument("--tls-key", metavar="PATH", help="PEM private key of --tls-cert")
    group.add_argument(
        "--tls-client-ca", metavar="PATH", help="PEM CAs; clients must present a certificate"
    )


def _add_limit_flags(serve_cmd: argparse.ArgumentParser) -> None:
    group = serve_cmd.add_argument_group("limits per connection (see docs/protocol.md §10.1)")

    def limit(flag: str, low: int, high: int, help: str) -> None:
        name = flag.removeprefix("--").replace("-", "_")
        default = getattr(_LIMITS, name)
        metavar = "MS" if flag.endswith("-ms") else "BYTES" if flag.endswith("-bytes") else "N"
        group.add_argument(
            flag,
            type=_bounded(low, high),
            default=default,
            metavar=metavar,
            help=f"{help} (default {default})",
        )

    limit("--max-connections", 1, 1_000_000, "open connections")
    limit("--max-unauthenticated", 1, 1_000_000, "connections not yet through the handshake")
    limit("--handshake-timeout-ms", _TIMEOUT_MIN_MS, _HOUR_MS, "from connect to welcome")
    limit("--tls-handshake-timeout-ms", _TIMEOUT_MIN_MS, _HOUR_MS, "the TLS handshake")
    limit("--frame-timeout-ms", _TIMEOUT_MIN_MS, _HOUR_MS, "a frame, once begun, to complete")
    group.add_argument(
        "--idle-timeout-ms",
        type=_zero_or(_bounded(_TIMEOUT_MIN_MS, 24 * _HOUR_MS)),
        default=None,
        metavar="MS",
        help=f"close a connection with no frame this long; 0 never "
        f"(default {IDLE_TIMEOUT_HEARTBEATS} x --heartbeat-ms)",
    )
    limit("--max-in-flight", 1, 1_000_000, "requests read and not answered, then stop reading")
    limit("--max-outbound-bytes", 64 * 1024, 1 << 30, "replies waiting to be read")
    limit("--write-stall-ms", _TIMEOUT_MIN_MS, _HOUR_MS, "replies not draining, then abort")
    limit("--max-args-bytes", 1, FRAME_CEILING_BYTES, "msgpack bytes of one job's args")
    limit("--auth-fail-delay-ms", 0, 60_000, "before answering a failed authentication")


def _zero_or(parse: "Callable[[str], int]") -> "Callable[[str], int]":
    def parse_or_zero(text: str) -> int:
        return 0 if text.strip() == "0" else parse(text)

    return parse_or_zero


def _limits(args: argparse.Namespace) -> Limits:
    idle_ms = args.idle_timeout_ms
    return Limits(
        max_connections=args.max_connections,
        max_unauthenticated=args.max_unauthenticated,
        handshake_timeout_ms=args.handshake_timeout_ms,
        tls_handshake_timeout_ms=args.tls_handshake_timeout_ms,
        frame_timeout_ms=args.frame_timeout_ms,
        idle_timeout_ms=IDLE_TIMEOUT_HEARTBEATS * args.heartbeat_ms if idle_ms is None else idle_ms,
        max_in_flight=args.max_in_flight,
        max_outbound_bytes=args.max_outbound_bytes,
        write_stall_ms=args.write_stall_ms,
        max_args_bytes=args.max_args_bytes,
        auth_fail_delay_ms=args.auth_fail_delay_ms,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "warning").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "journal":
        return _TOOLS[args.tool](args.dir)
    if args.heartbeat_ms * 2 > args.process_ttl_ms:
        logging.getLogger("leash").error(
            "--process-ttl-ms must be at least twice --heartbeat-ms, so one lost beat is not death"
        )
        return EXIT_CONFIG
    config = ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        fsync=args.fsync,
        max_frame_bytes=args.max_frame_bytes,
        admin_socket=args.admin_socket,
        admin_uids=tuple(args.admin_uid),
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        segment_bytes=args.segment_bytes,
        snapshot_min_bytes=args.snapshot_min_bytes,
        disk_low_bytes=args.disk_low_bytes,
        repair_truncate=args.repair_truncate,
        core=CoreConfig(
            dead_max_jobs=args.dead_max_jobs,
            dead_max_age_ms=args.dead_max_age_s * 1000,
            heartbeat_ms=args.heartbeat_ms,
            process_ttl_ms=args.process_ttl_ms,
            reconnect_grace_ms=args.reconnect_grace_ms,
            restart_grace_ms=args.restart_grace_ms,
            terminate_grace_ms=args.terminate_grace_ms,
            lost_leases_max=args.lost_leases_max,
            batch_open_timeout_ms=args.batch_open_timeout_ms,
            batch_finished_retention_ms=args.batch_retention_ms,
            batch_unfinished_retention_ms=args.batch_unfinished_retention_ms,
        ),
        limits=_limits(args),
        key_file=args.key_file,
        insecure_no_auth=args.insecure_no_auth,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )
    try:
        code = _run(config)
    except StartupError as error:
        logging.getLogger("leash").error("%s", error)
        return EXIT_CONFIG
    except OSError as error:
        logging.getLogger("leash").error("cannot start: %s", error)
        return EXIT_CONFIG
    if code == EXIT_JOURNAL_FAILED:
        # The journal's writer thread may be stuck in the kernel: do not wait for it.
        logging.shutdown()
        os._exit(code)
    return code


def _run(config: ServerConfig) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        return asyncio.run(serve(config))
    return uvloop.run(serve(config))
