"""The ``leash`` command line (the console script is ``main``).

    leash serve [ARGS...]            run the broker: python -m leash.broker serve ARGS...
    leash journal TOOL DIR           verify, dump or compact a data directory offline
                                     (python -m leash.broker journal TOOL DIR)
    leash web [ARGS...]              the dashboard and HTTP admin API (python -m leash.web)
    leash web-password [--out F]     make its password file
    leash worker MODULE[:NAME] [OPTIONS]
                                     import MODULE, run its Worker or the handlers it registered
    leash push TYPE [ARGS_JSON]      push one job, print its id
    leash keygen [--id ID] [--out F] print (or append to F) a new random key
                 [--role admin]      (admin: may MUTATE and FLUSH on the Faktory port)
    leash completion bash|zsh        print the shell completion script

``leash worker`` is in ``leash.client._worker_cli``, the broker address
flags in ``leash.client._cli_address``, the operator commands in
``leash.client._admin_cli``.

The broker is ``--url leash[s]://HOST:PORT[?options]`` or ``--host``/``--port``,
else ``LEASH_URL``, else 127.0.0.1:7420; ``--key-file`` (and ``--key-id``)
authenticate, ``--tls`` (and ``--tls-ca``, ``--tls-cert``, ``--tls-key``) speak
TLS. Each flag wins over its variable (``LEASH_KEY_FILE``, ``LEASH_KEY_ID``,
``LEASH_TLS_CA``, ``LEASH_TLS_CLIENT_CERT``, ``LEASH_TLS_CLIENT_KEY``: see
``leash.client._env``), and both over the same options in the URL. ``serve`` and ``journal`` hand
their arguments to the broker untouched, in a new program image: the client
never imports the broker. Errors are one line on stderr; the exit status is 1,
or 2 for a usage error (a number out of range is one). Output cut short by
its reader (``leash dead | head``) ends the command quietly, with status 141
as for a shell tool killed by SIGPIPE.
"""

# PYTHON_ARGCOMPLETE_OK
import argparse
import os
import secrets
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import NoReturn

import argcomplete
import msgspec
from argcomplete.shell_integration import shellcode

from leash import __version__
from leash._pipes import quiet_broken_pipe
from leash.protocol import limits
from leash.protocol.auth import Key, key_file_text, mode_problem
from leash.protocol.limits import KEY_ID_MAX_CHARS, KEY_SECRET_MIN_BYTES
from leash.protocol.messages import JobSpec

from ._admin_cli import add_commands as add_admin_commands
from ._args import whole
from ._cli_address import add_address, endpoint_of
from ._exceptions import CliError, LeashError
from ._types import job_spec
from ._worker_cli import add_worker_command
from .blocking import Client

SHELLS = ("bash", "zsh")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] in (["serve"], ["journal"]):
            _exec_broker(args)
        if args[:1] in (["web"], ["web-password"]):
            _exec_web(args)
        parser = _parser()
        argcomplete.autocomplete(parser)
        misplaced = _options_before_the_command(parser, args)
        if misplaced is not None:
            print(misplaced, file=sys.stderr)
            return 2
        try:
            options = parser.parse_args(args)
        except SystemExit as stop:  # --help, --version or a usage error: argparse exits
            return _exit_status(stop)
        code: int = options.run(options)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return quiet_broken_pipe()
    except (LeashError, OSError, ValueError) as exc:
        print(f"leash: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _options_before_the_command(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """``leash --port 7431 push t``: a command's options go after it. The
    usage error that says so, with the line put right; None when the
    arguments do not start with an option that belongs to a command."""
    if not args or not args[0].startswith("-") or args[0] in ("-h", "--help", "--version"):
        return None
    subparsers = parser._subparsers
    assert subparsers is not None
    commands: dict[str, object] = subparsers._group_actions[0].choices  # type: ignore[assignment]
    at = next((index for index, arg in enumerate(args) if arg in commands), None)
    if at is None:
        return None
    command = args[at]
    fixed = shlex.join([command, *args[:at], *args[at + 1 :]])
    return (
        f"leash: error: {args[0]} goes after the command: leash {fixed} "
        f"(see leash {command} --help)"
    )


def _exit_status(stop: SystemExit) -> int:
    """The status a ``SystemExit`` stands for, as the interpreter would exit with it."""
    match stop.code:
        case None:
            return 0
        case int(code):
            return code
        case message:
            print(message, file=sys.stderr)
            return 1


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="leash", description="Leash job broker: run it, run workers, push jobs.")
    parser.add_argument("--version", action="version", version=f"leash {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the broker (arguments go to it; see serve --help)"
    )
    serve.add_argument(
        "args", nargs=argparse.REMAINDER, help="the broker's flags: --config FILE, --port ..."
    )
    journal = commands.add_parser(
        "journal", help="offline journal tools: verify DIR, dump DIR, compact DIR"
    )
    journal.add_argument("args", nargs=argparse.REMAINDER, help="verify|dump|compact DIR")
    web = commands.add_parser(
        "web", help="serve the dashboard and the HTTP admin API (arguments: see web --help)"
    )
    web.add_argument("args", nargs=argparse.REMAINDER, help="--port, --password-file ...")
    web_password = commands.add_parser(
        "web-password", help="make a password file for leash web --password-file"
    )
    web_password.add_argument("args", nargs=argparse.REMAINDER, help="--out FILE, --stdin")

    add_worker_command(commands)
    add_admin_commands(commands)

    push = commands.add_parser("push", help="push one job and print its id")
    push.add_argument("type", help="the job type (handler name)")
    push.add_argument("args_json", nargs="?", default=None, help="the args as JSON, e.g. '[1, 2]'")
    push.add_argument("--queue", default="default")
    push.add_argument("--id", default=None, help="job id (pushing a known id adds nothing)")
    push.add_argument(
        "--priority",
        type=whole(limits.PRIORITY_MIN, limits.PRIORITY_MAX),
        default=None,
        help="0..9, 9 most urgent",
    )
    push.add_argument(
        "--delay-ms",
        type=whole(0, limits.SCHEDULE_HORIZON_MS),
        default=None,
        help="run this much later",
    )
    push.add_argument(
        "--max-attempts",
        type=whole(limits.MAX_ATTEMPTS_MIN, limits.MAX_ATTEMPTS_MAX),
        default=None,
        help=f"{limits.MAX_ATTEMPTS_MIN}..{limits.MAX_ATTEMPTS_MAX}",
    )
    push.add_argument(
        "--unique-key",
        default=None,
        help="uniqueness key: while a job with it waits or runs, the push adds nothing",
    )
    push.add_argument(
        "--unique",
        action="store_true",
        help="a uniqueness key derived from queue, type and args",
    )
    push.add_argument(
        "--unique-for-ms",
        type=whole(0, limits.UNIQUE_FOR_MAX_MS),
        default=None,
        help="the key stays taken this long after the job succeeds",
    )
    push.add_argument(
        "--ttl-ms",
        type=whole(1, limits.SCHEDULE_HORIZON_MS),
        default=None,
        help="not started within this long: removed, never run",
    )
    push.add_argument(
        "--time-limit-ms",
        type=whole(limits.TIME_LIMIT_MIN_MS, limits.TIME_LIMIT_MAX_MS),
        default=None,
        help="each attempt runs at most this long (then fails with TimeLimitExceeded)",
    )
    push.add_argument(
        "--concurrency-key",
        default=None,
        help="the queue's per-key limit counts the job under this key (a customer id, say)",
    )
    add_address(push)
    push.set_defaults(run=_run_push)

    keygen = commands.add_parser("keygen", help="make a new random key for --key-file")
    keygen.add_argument("--id", default=None, help="the key id (default: key- and 8 hex digits)")
    keygen.add_argument(
        "--not-after", default=None, help="expiry, ISO 8601 with a zone: 2027-01-01T00:00:00Z"
    )
    keygen.add_argument(
        "--out", default=None, help="append to this key file (made mode 0600) instead of printing"
    )
    keygen.add_argument(
        "--role",
        choices=["admin"],
        default=None,
        help="admin: may also MUTATE and FLUSH on the Faktory port (docs/faktory.md)",
    )
    keygen.set_defaults(run=_run_keygen)

    completion = commands.add_parser(
        "completion",
        help="print the shell completion script",
        description='Print the completion script for SHELL; load it with eval "$(leash '
        'completion bash)" in ~/.bashrc, or the same with zsh in ~/.zshrc.',
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(run=_run_completion)
    return parser


def _exec_broker(args: list[str]) -> NoReturn:
    os.execv(sys.executable, [sys.executable, "-m", "leash.broker", *args])


def _exec_web(args: list[str]) -> NoReturn:
    rest = ["password", *args[1:]] if args[0] == "web-password" else args[1:]
    os.execv(sys.executable, [sys.executable, "-m", "leash.web", *rest])


def _run_completion(options: argparse.Namespace) -> int:
    sys.stdout.write(shellcode(["leash"], shell=options.shell))
    return 0


def _run_keygen(options: argparse.Namespace) -> int:
    key_id = options.id if options.id is not None else f"key-{secrets.token_hex(4)}"
    if not 1 <= len(key_id) <= KEY_ID_MAX_CHARS:
        raise CliError(f"--id must be 1 to {KEY_ID_MAX_CHARS} characters")
    not_after = None
    if options.not_after is not None:
        not_after = datetime.fromisoformat(options.not_after)
        if not_after.tzinfo is None:
            raise CliError("--not-after needs a time zone, e.g. 2027-01-01T00:00:00Z")
    key = Key(key_id, secrets.token_bytes(KEY_SECRET_MIN_BYTES), not_after, options.role or "")
    text = key_file_text(key)
    if options.out is None:
        sys.stdout.write(text)
        return 0
    fd = os.open(options.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "a") as file:
        problem = mode_problem(options.out, os.fstat(fd).st_mode)
        if problem is not None:
            raise CliError(problem)
        file.write(("\n" if file.tell() else "") + text)
    print(f"key {key_id} added to {options.out}", file=sys.stderr)
    return 0


def _run_push(options: argparse.Namespace) -> int:
    endpoint = endpoint_of(options)
    args = None
    if options.args_json is not None:
        try:
            args = msgspec.json.decode(options.args_json)
        except msgspec.DecodeError as exc:
            raise CliError(f"ARGS_JSON is not JSON: {exc}") from None
    try:
        spec = _push_spec(options, args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with Client(
        endpoint.host, endpoint.port, timeout_s=10.0, key=endpoint.key, tls=endpoint.tls
    ) as client:
        (result,) = client.push_many([spec])
    print(result.id)
    if result.duplicate:
        print(f"a duplicate: job {result.id} ({result.state}) holds the key", file=sys.stderr)
    return 0


def _push_spec(options: argparse.Namespace, args: object) -> JobSpec:
    return job_spec(
        options.type,
        args,
        queue=options.queue,
        id=options.id,
        priority=options.priority,
        delay_ms=options.delay_ms,
        max_attempts=options.max_attempts,
        unique_key=options.unique_key,
        unique=options.unique,
        unique_for_ms=options.unique_for_ms,
        ttl_ms=options.ttl_ms,
        time_limit_ms=options.time_limit_ms,
        concurrency_key=options.concurrency_key,
    )
