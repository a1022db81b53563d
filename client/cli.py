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

``leash worker`` imports MODULE, a dotted module name (the current directory
is put on ``sys.path``) or the path of a ``.py`` file, and runs the
``Worker`` object the module defines (``MODULE:NAME`` names one when it
defines several), with its handlers and settings, or else every handler the
module registered with the ``leash.client.handler`` decorator (those join a
module's Worker too); the flags given (and ``LEASH_URL``) win over the
Worker's settings::

    # tasks.py
    from leash.client import handler

    @handler("send_email")
    def send_email(to: str, subject: str) -> None: ...

    $ leash worker tasks --queues mail,default --concurrency 8

    # or: worker = Worker(queues=["mail"], concurrency=8), @worker.handler(...)
    $ leash worker tasks

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
import importlib
import importlib.util
import logging
import os
import secrets
import signal
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import argcomplete
import msgspec
from argcomplete.shell_integration import shellcode

from leash import __version__
from leash import _logs as logs
from leash._logs import LOG_FORMATS
from leash._pipes import quiet_broken_pipe
from leash.protocol import limits
from leash.protocol.auth import Key, key_file_text, mode_problem
from leash.protocol.limits import KEY_ID_MAX_CHARS, KEY_SECRET_MIN_BYTES
from leash.protocol.messages import JobSpec

from ._admin_cli import add_commands as add_admin_commands
from ._args import seconds, whole
from ._env import URL, Options, endpoint
from ._exceptions import CliError, LeashError
from ._handlers import registry
from ._joblog import JOB_LOGS
from ._signals import STOP_SIGNALS
from ._types import job_spec
from ._unknown import POLICIES
from ._url import DEFAULT_HOST, DEFAULT_PORT, Endpoint
from .blocking import Client
from .worker import Worker

log = logging.getLogger("leash.cli")
LOG_FORMAT_VARIABLE = "LEASH_LOG_FORMAT"  # the broker's variable too: one setting for both
SHELLS = ("bash", "zsh")


CONCURRENCY_MAX = 100_000
GRACE_MAX_S = 24 * 3600.0
PORT_MAX = 65535


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

    worker = commands.add_parser("worker", help="run a module's Worker, or its handlers")
    worker.add_argument(
        "module", help="dotted module name or path of a .py file, with :NAME for one Worker of it"
    )
    worker.add_argument(
        "--queues", default=None, help="comma-separated, most urgent first (default: default)"
    )
    worker.add_argument(
        "--concurrency",
        type=whole(1, CONCURRENCY_MAX),
        default=None,
        help="jobs run at once (threads; default 4)",
    )
    worker.add_argument(
        "--grace-s",
        type=seconds(0, GRACE_MAX_S),
        default=None,
        help="on stop, running jobs get this long to finish (seconds; default 25)",
    )
    worker.add_argument(
        "--wait-ms",
        type=whole(0, limits.FETCH_WAIT_MAX_MS),
        default=None,
        help="long-poll wait of each fetch; a stop waits for it too (default 5000)",
    )
    worker.add_argument(
        "--pool",
        choices=["threads", "processes"],
        default=None,
        help="where plain handlers run: threads, or a child process a slot for CPU-bound work "
        "(default threads; a handler's own pool= wins)",
    )
    worker.add_argument(
        "--no-auto-extend",
        action="store_true",
        help="do not extend running jobs' leases (a job longer than its lease_ttl_ms is lost)",
    )
    worker.add_argument(
        "--unknown",
        choices=POLICIES,
        default=None,
        help="a job of a type with no handler here: dead at once (default), or released "
        "for another worker (while a deploy rolls)",
    )
    worker.add_argument(
        "--log-level", default="info", type=str.lower, choices=["debug", "info", "warning", "error"]
    )
    worker.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help=f"text lines, or one JSON object a line (default: {LOG_FORMAT_VARIABLE}, else text)",
    )
    worker.add_argument(
        "--job-log",
        choices=JOB_LOGS,
        default=None,
        help="the level of each job's start and end lines: info (default), debug, or off "
        "(failures are logged at warning or error whatever it says)",
    )
    worker.add_argument(
        "--metrics-port",
        type=whole(0, 65_535),
        default=None,
        help="serve Prometheus metrics on this port (GET /metrics; default: none)",
    )
    worker.add_argument(
        "--metrics-host", default=None, help="the metrics port's address (default 127.0.0.1)"
    )
    _add_address(worker)
    worker.set_defaults(run=_run_worker)

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
    _add_address(push)
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


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=None, help="leash[s]://HOST:PORT[?options] (default: LEASH_URL)"
    )
    parser.add_argument("--host", default=None, help=f"broker host (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port",
        type=whole(1, PORT_MAX),
        default=None,
        help=f"broker port (default {DEFAULT_PORT})",
    )
    parser.add_argument("--key-file", default=None, help="authenticate with a key from this file")
    parser.add_argument("--key-id", default=None, help="which key of --key-file (default: last)")
    parser.add_argument("--tls", action="store_true", help="speak TLS (system CAs unless --tls-ca)")
    parser.add_argument("--tls-ca", default=None, help="PEM CAs that sign the broker's certificate")
    parser.add_argument("--tls-cert", default=None, help="PEM client certificate, if asked for")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")


def _endpoint(options: argparse.Namespace) -> Endpoint:
    given = Options(
        options.url,
        options.host,
        options.port,
        options.key_file,
        options.key_id,
        options.tls,
        options.tls_ca,
        options.tls_cert,
        options.tls_key,
    )
    try:
        return endpoint(given)
    except ValueError as exc:
        raise CliError(str(exc)) from None


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
    endpoint = _endpoint(options)
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


def _run_worker(options: argparse.Namespace) -> int:
    log_format = options.log_format or os.environ.get(LOG_FORMAT_VARIABLE) or "text"
    if log_format not in LOG_FORMATS:
        raise CliError(
            f"{LOG_FORMAT_VARIABLE} must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}"
        )
    logs.setup(options.log_level, log_format)
    # Until the Worker's run handles signals, a stop signal means "exit now"
    # (status 0); once its handling is over, the worker is finishing anyway:
    # the signal is ignored (an ignored signal stays ignored while Python
    # finalizes, where a handler would be reset to the default, which kills).
    running: list[Worker] = []
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: _stop_signal(running, signum))
    worker = _module_worker(options.module)
    queues = [name for name in options.queues.split(",") if name] if options.queues else None
    worker = worker.with_options(
        queues=queues,
        concurrency=options.concurrency,
        endpoint=_worker_endpoint(options, worker),
        wait_ms=options.wait_ms,
        grace_s=options.grace_s,
        auto_extend=False if options.no_auto_extend else None,
        pool=options.pool,
        unknown=options.unknown,
        job_log=options.job_log,
        metrics_port=options.metrics_port,
        metrics_host=options.metrics_host,
    )
    running.append(worker)
    log.info("running %s on %s", ", ".join(sorted(worker.handlers)), ", ".join(worker.queues))
    worker.run()
    for signum in STOP_SIGNALS:  # ignored from here on: Python's exit would reset a handler
        signal.signal(signum, signal.SIG_IGN)
    if worker.unfinished:
        # Their leases are released; their threads cannot be stopped and would hold the exit.
        log.warning("exiting with %d handlers still running", worker.unfinished)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _stop_signal(running: list[Worker], signum: int) -> None:
    """SIGTERM or SIGINT outside the Worker's own handling of them."""
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)  # from now on the process is on its way out
    if not any(worker.stopped for worker in running):
        log.warning("%s: exiting now", signal.Signals(signum).name)
        raise SystemExit(0)


def _worker_endpoint(options: argparse.Namespace, worker: Worker) -> Endpoint:
    """Where ``leash worker`` connects: the flags' broker, else ``LEASH_URL``,
    else the module's Worker's own address; the key and TLS from the flags
    and their variables."""
    endpoint = _endpoint(options)
    given = (options.url, options.host, options.port, os.environ.get(URL) or None)
    if given == (None, None, None, None):
        endpoint = endpoint._replace(host=worker.host, port=worker.port)
    return endpoint


def _module_worker(target: str) -> Worker:
    """The Worker ``leash worker TARGET`` runs: the module's Worker object
    (``MODULE:NAME``: that one), with the handlers registered with
    ``@handler`` added, or a Worker of those handlers alone."""
    name, _, attribute = target.partition(":")
    module = import_target(name)
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Worker):
            raise CliError(f"{name} has no Worker named {attribute!r}")
        workers = [found]
    else:
        workers = list({id(v): v for v in vars(module).values() if isinstance(v, Worker)}.values())
    if len(workers) > 1:
        names = ", ".join(sorted(k for k, v in vars(module).items() if isinstance(v, Worker)))
        raise CliError(f"{name} defines {len(workers)} Worker objects ({names}): run {name}:NAME")
    if not workers and not registry:
        raise CliError(
            f"{name} has no Worker and registered no handlers "
            "(make a leash.Worker and use @worker.handler('type'), or use @leash.handler('type'))"
        )
    worker = workers[0] if workers else Worker(handlers=registry)
    for kind, fn in registry.items():
        worker.register(kind, fn)
    if not worker.handlers:
        raise CliError(f"{name}: its Worker has no handlers (use @worker.handler('type'))")
    return worker


def import_target(target: str) -> ModuleType:
    """Import a dotted module name or a ``.py`` file, as ``leash worker`` does."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if target.endswith(".py"):
            return _import_file(Path(target))
        return importlib.import_module(target)
    except CliError:
        raise
    except Exception as exc:  # the user's module may raise anything while it loads
        raise CliError(f"cannot import {target}: {_describe(exc)}") from exc


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    sys.path.insert(0, str(path.resolve().parent))  # so the file can import its neighbours
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot load {path} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def _describe(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and not isinstance(exc, SyntaxError | ModuleNotFoundError):
        text += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return text
