"""The broker's address on the ``leash`` command line (``push``, ``worker``):
``--url``, or ``--host``/``--port``, and ``--key-file``, ``--tls`` and their
companions; what is not given comes from the variables (``leash.client._env``)."""

import argparse

from ._args import whole
from ._env import Options, endpoint
from ._exceptions import CliError
from ._url import DEFAULT_HOST, DEFAULT_PORT, Endpoint

PORT_MAX = 65535


def add_address(parser: argparse.ArgumentParser) -> None:
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


def endpoint_of(options: argparse.Namespace) -> Endpoint:
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
