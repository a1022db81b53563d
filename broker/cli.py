"""``python -m leash.broker serve`` (also ``leash serve``): settings, logging, run.
``python -m leash.broker journal verify|dump|compact DIR`` (also ``leash journal``):
the offline journal tools (broker/journal/tools.py).

The flags of ``serve`` are made from ``settings.SETTINGS``; each can also
come from a ``LEASH_*`` variable or the ``--config`` TOML file
(broker/sources.py). Any setting that cannot be used — a bad flag, variable
or file — exits with status 78 (EX_CONFIG) and one line saying which, so a
supervisor does not restart into the same mistake.
"""

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from leash import __version__
from leash._pipes import quiet_broken_pipe
from leash.broker import logs
from leash.broker.journal import tools
from leash.broker.server.config import ServerConfig
from leash.broker.server.main import EXIT_CONFIG, EXIT_JOURNAL_FAILED, StartupError, serve
from leash.broker.settings import GROUPS, SETTINGS, Setting, SettingError
from leash.broker.sources import CONFIG_ENV, ConfigError, Resolved, describe, resolve, server_config

_TOOLS = {"verify": tools.verify, "dump": tools.dump, "compact": tools.compact}
log = logging.getLogger("leash")


class _Parser(argparse.ArgumentParser):
    """A bad flag of ``serve`` is a configuration error: exit 78, not 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="leash", description="The Leash job broker.")
    top.add_argument("--version", action="version", version=f"leash {__version__}")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve_cmd = commands.add_parser(
        "serve",
        help="run the broker",
        description="Run the broker. Every flag can also be set by its LEASH_* variable or "
        "in the --config file; a flag wins over the variable, the variable over the file.",
    )
    serve_cmd.add_argument(
        "--config",
        metavar="FILE",
        help=f"read settings from this TOML file (keys: the flags without --) [env {CONFIG_ENV}]",
    )
    groups: dict[str, Any] = {}
    for setting in SETTINGS:
        group = groups.get(setting.group)
        if group is None:
            group = groups[setting.group] = serve_cmd.add_argument_group(GROUPS[setting.group])
        _add_flag(group, setting)
    journal_cmd = commands.add_parser("journal", help="offline journal tools")
    journal_cmd.add_argument("tool", choices=sorted(_TOOLS), help="verify, dump or compact")
    journal_cmd.add_argument("dir", help="the data directory")
    return top


def _add_flag(group: Any, setting: Setting) -> None:
    shown = "unset" if setting.default in (None, "") else str(setting.default).lower()
    if setting.low is not None:
        shown += f"; {setting.range_text()}"
    help_text = f"{setting.help} (default {shown}) [env {setting.env}]"
    if setting.type is bool:
        group.add_argument(
            setting.flag, action="store_true", default=argparse.SUPPRESS, help=help_text
        )
        return
    group.add_argument(
        setting.flag,
        type=_argparse_type(setting),
        action="append" if setting.many else "store",
        default=argparse.SUPPRESS,
        metavar=setting.metavar or None,
        choices=setting.choices or None,
        help=help_text,
    )


def _argparse_type(setting: Setting) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            return setting.parse(text)
        except SettingError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = setting.dest
    return parse


def resolve_argv(argv: Sequence[str], environ: Mapping[str, str]) -> Resolved:
    """The settings ``serve ARGV`` runs with, in this environment (ConfigError if unusable)."""
    args = parser().parse_args(["serve", *argv])
    flags = {key: value for key, value in vars(args).items() if key not in ("command", "config")}
    return resolve(flags, environ, args.config)


def config_of(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The ``ServerConfig`` of ``serve ARGV`` (no environment unless given)."""
    return server_config(resolve_argv(argv, environ or {}).values)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["serve"]:
        args = parser().parse_args(argv)  # journal; or --help, --version, a usage error: exits
        logs.setup("warning", "text")
        try:
            code = _TOOLS[args.tool](args.dir)
            sys.stdout.flush()
        except BrokenPipeError:
            return quiet_broken_pipe()
        return code
    try:
        resolved = resolve_argv(argv[1:], os.environ)
    except ConfigError as error:
        logs.setup("info", "text")
        log.error("%s", error)
        return EXIT_CONFIG
    values = resolved.values
    logs.setup(values["log_level"], values["log_format"])
    if values["heartbeat_ms"] * 2 > values["process_ttl_ms"]:
        log.error(
            "--process-ttl-ms must be at least twice --heartbeat-ms, so one lost beat is not death"
        )
        return EXIT_CONFIG
    log.info("leash %s; %s", __version__, describe(resolved))
    return _start(server_config(values))


def _start(config: ServerConfig) -> int:
    try:
        code = _run(config)
    except StartupError as error:
        log.error("%s", error)
        return EXIT_CONFIG
    except OSError as error:
        log.error("cannot start: %s", error)
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
