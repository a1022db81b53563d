"""``python -m broker serve`` (also ``leash serve``): parse flags, run.
``python -m broker journal verify|dump|compact DIR`` (also ``leash journal``):
the offline journal tools (broker/journal/tools.py)."""

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable

from broker.core.config import CoreConfig
from broker.journal import tools
from broker.journal.compaction import DEFAULT_SNAPSHOT_MIN_BYTES
from broker.journal.group_commit import FsyncPolicy
from broker.journal.log import DEFAULT_SEGMENT_BYTES
from broker.server.config import DEFAULT_PORT, ServerConfig
from broker.server.main import EXIT_CONFIG, EXIT_JOURNAL_FAILED, StartupError, serve
from protocol.limits import (
    FRAME_CEILING_BYTES,
    FRAME_MAX_BYTES,
    HANDSHAKE_FRAME_MAX_BYTES,
    HEARTBEAT_MAX_MS,
    HEARTBEAT_MIN_MS,
)

_CORE = CoreConfig()
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
        "--terminate-grace-ms",
        type=_bounded(0, 3_600_000),
        default=_CORE.terminate_grace_ms,
        help="after terminate, the broker releases what is still leased (default 25000)",
    )
    _journal_flags(serve_cmd)
    serve_cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
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
            terminate_grace_ms=args.terminate_grace_ms,
        ),
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
