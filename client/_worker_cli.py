"""``leash worker MODULE[:NAME] [OPTIONS]``: run a module's Worker, or the
handlers it registered.

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

Until the Worker's run handles them, SIGTERM and SIGINT end the command at
once (status 0); once its run is over they are ignored while the process
exits. A run that leaves handler threads running ends the process without
waiting for them (their leases were released).
"""

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from leash import _logs as logs
from leash._logs import LOG_FORMATS
from leash.protocol import limits

from ._args import seconds, whole
from ._cli_address import add_address, endpoint_of
from ._env import URL
from ._exceptions import CliError
from ._handlers import registry
from ._joblog import JOB_LOGS
from ._signals import STOP_SIGNALS
from ._unknown import POLICIES
from ._url import Endpoint
from .worker import Worker

log = logging.getLogger("leash.cli")
LOG_FORMAT_VARIABLE = "LEASH_LOG_FORMAT"  # the broker's variable too: one setting for both
CONCURRENCY_MAX = 100_000
GRACE_MAX_S = 24 * 3600.0


def add_worker_command(commands: "argparse._SubParsersAction[Any]") -> None:
    """Register ``leash worker`` on the ``leash`` parser."""
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
    add_address(worker)
    worker.set_defaults(run=_run_worker)


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
    endpoint = endpoint_of(options)
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
