"""``leash web`` (``python -m leash.web``): run the dashboard and the HTTP admin API.

A process of its own beside the broker, talking to it over the broker's
admin socket, so that HTTP parsing and page rendering never run on the
broker's event loop and the broker never loads a web library. It runs
uvicorn (h11) on uvloop.

Protected mode, as for the broker's port: it binds 127.0.0.1 unless told
otherwise, and anywhere else it refuses to start (exit 78) without
credentials (``--password-file``, ``--key-file`` or both) and TLS
(``--tls-cert`` and ``--tls-key``). With credentials, every page and API
call needs them, on loopback too.

``leash web-password`` makes a password file: the scrypt hash of a password
read from the terminal (twice) or, with ``--stdin``, one line of stdin.
"""

import argparse
import getpass
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Final, NoReturn

from leash.broker.server.security import is_loopback
from leash.client._admin_cli import socket_path
from leash.web.credentials import Credentials, CredentialsError, hash_password

DEFAULT_PORT: Final = 7421
EXIT_CONFIG: Final = 78
REFRESH_MIN_S, REFRESH_MAX_S = 1, 3600
# The dashboard yields the CPU to the broker on the same host: rendering a
# page or a big JSON page never takes a core the broker's loop wants.
NICE_DEFAULT, NICE_MAX = 10, 19
ENV: Final = {
    "host": "LEASH_WEB_HOST",
    "port": "LEASH_WEB_PORT",
    "password_file": "LEASH_WEB_PASSWORD_FILE",
    "key_file": "LEASH_WEB_KEY_FILE",
    "tls_cert": "LEASH_WEB_TLS_CERT",
    "tls_key": "LEASH_WEB_TLS_KEY",
}
log = logging.getLogger("leash.web")


class StartupError(Exception):
    """The dashboard cannot start as configured; the message says how to fix it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    top = _Parser(
        prog="leash web",
        description="Serve the dashboard and the HTTP admin API for the broker whose admin "
        "socket is given (a separate process; the broker keeps serving without it). Each flag "
        "can also be set by its LEASH_WEB_* variable.",
    )

    def env(name: str) -> str | None:
        return environ.get(ENV[name]) or None

    top.add_argument(
        "--host", default=env("host") or "127.0.0.1", help="bind address [LEASH_WEB_HOST]"
    )
    top.add_argument(
        "--port",
        type=_port,
        default=env("port") or str(DEFAULT_PORT),  # a string: argparse checks it as a flag
        help=f"port; 0 picks a free one (default {DEFAULT_PORT}) [LEASH_WEB_PORT]",
    )
    top.add_argument(
        "--socket", default=None, help="the broker's admin socket [LEASH_ADMIN_SOCKET]"
    )
    top.add_argument("--data-dir", default=None, help="find the socket here [LEASH_DATA_DIR]")
    top.add_argument(
        "--password-file",
        default=env("password_file"),
        help="sign in with the password hashed in this file (leash web-password) "
        "[LEASH_WEB_PASSWORD_FILE]",
    )
    top.add_argument(
        "--key-file",
        default=env("key_file"),
        help="sign in (or call the API) with a key of this key file, as KEY_ID:SECRET "
        "[LEASH_WEB_KEY_FILE]",
    )
    top.add_argument(
        "--tls-cert", default=env("tls_cert"), help="PEM certificate chain [LEASH_WEB_TLS_CERT]"
    )
    top.add_argument(
        "--tls-key", default=env("tls_key"), help="PEM private key [LEASH_WEB_TLS_KEY]"
    )
    top.add_argument(
        "--refresh-s",
        type=_refresh,
        default=5,
        help="pages refresh themselves this often (seconds, default 5)",
    )
    top.add_argument(
        "--nice",
        type=_niceness,
        default=NICE_DEFAULT,
        help=f"run at this much lower CPU priority than the broker beside it (default "
        f"{NICE_DEFAULT}; 0 to 19)",
    )
    top.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return top


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {text!r}")
    return int(text)


def _niceness(text: str) -> int:
    if not text.isdigit() or int(text) > NICE_MAX:
        raise argparse.ArgumentTypeError(f"between 0 and {NICE_MAX}, not {text!r}")
    return int(text)


def _refresh(text: str) -> int:
    if not text.isdigit() or not REFRESH_MIN_S <= int(text) <= REFRESH_MAX_S:
        raise argparse.ArgumentTypeError(
            f"between {REFRESH_MIN_S} and {REFRESH_MAX_S}, not {text!r}"
        )
    return int(text)


def check(options: argparse.Namespace, credentials: Credentials) -> None:
    """Protected mode: beyond loopback, credentials and TLS, or no start."""
    if (options.tls_cert is None) != (options.tls_key is None):
        raise StartupError("TLS needs both --tls-cert and --tls-key")
    if is_loopback(options.host):
        return
    where = options.host or "every interface"
    missing = [
        what
        for what, present in (
            ("credentials (--password-file or --key-file)", credentials.required),
            ("TLS (--tls-cert and --tls-key)", options.tls_cert is not None),
        )
        if not present
    ]
    if missing:
        raise StartupError(
            f"refusing to serve the dashboard on {where} without {' and '.join(missing)} "
            "(protected mode); bind 127.0.0.1, or give them"
        )


def main(argv: Sequence[str] | None = None) -> int:
    options = parser(os.environ).parse_args(argv)
    logging.basicConfig(
        level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        credentials = Credentials.load(options.password_file, options.key_file)
        check(options, credentials)
        sock = _bind(options.host, options.port)
    except (StartupError, CredentialsError, OSError) as error:
        print(f"leash web: error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    path = socket_path(options.socket, options.data_dir, os.environ)
    if options.nice:
        os.nice(options.nice)
    return _run(options, credentials, sock, path)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(128)
    return sock


def _run(
    options: argparse.Namespace, credentials: Credentials, sock: socket.socket, path: str
) -> int:
    import uvicorn

    from leash.web.app import make_app

    tls = options.tls_cert is not None
    app = make_app(path, credentials, secure=tls, refresh_s=options.refresh_s)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="h11",
        lifespan="off",
        log_level=options.log_level,
        access_log=options.log_level == "debug",
        server_header=False,
        proxy_headers=False,
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
    )
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    signing = "sign-in required" if credentials.required else "no sign-in (loopback)"
    log.info("dashboard on %s://%s:%d/ (%s); admin socket %s", scheme, host, port, signing, path)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def password_main(argv: Sequence[str] | None = None) -> int:
    """``leash web-password``: print (or write to --out, mode 0600) a password file line."""
    options = _password_parser().parse_args(argv)
    try:
        if options.stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                raise CredentialsError("the passwords differ")
        line = hash_password(password) + "\n"
    except CredentialsError as error:
        print(f"leash web-password: error: {error}", file=sys.stderr)
        return 1
    if options.out is None:
        sys.stdout.write(line)
        return 0
    fd = os.open(options.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600)
        file.write(line)
    print(f"password hash written to {options.out}", file=sys.stderr)
    return 0


def _password_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="leash web-password",
        description="Make a password file for leash web --password-file: the scrypt hash of "
        "a password (never the password itself).",
    )
    top.add_argument("--out", default=None, help="write it to this file (mode 0600)")
    top.add_argument("--stdin", action="store_true", help="read the password from stdin")
    return top
