"""The broker a client talks to, from its options and the environment.

Each setting comes from the first of: the caller's option (a flag of the
``leash`` command, an argument of ``Client.from_env``), its variable, the
default. The broker is ``--url`` or ``--host``/``--port``, else ``LEASH_URL``,
else ``leash://127.0.0.1:7420``; the key file and the TLS files may also
come from the URL's options (``leash.client._url``), below their variables.

- ``LEASH_URL``: ``leash[s]://HOST:PORT[?options]``;
- ``LEASH_KEY_FILE``, ``LEASH_KEY_ID``: authenticate with this key (default:
  the file's last live key);
- ``LEASH_TLS_CA``: speak TLS, verify the broker against these CAs;
- ``LEASH_TLS_CLIENT_CERT``, ``LEASH_TLS_CLIENT_KEY``: speak TLS, present
  this client certificate (for a broker that asks for one).

An empty variable counts as unset.
"""

import os
from collections.abc import Mapping
from typing import NamedTuple

from ._security import load_key, tls_context
from ._url import DEFAULT_HOST, DEFAULT_PORT, Endpoint, parse_url

URL = "LEASH_URL"
KEY_FILE, KEY_ID = "LEASH_KEY_FILE", "LEASH_KEY_ID"
TLS_CA, TLS_CERT, TLS_KEY = "LEASH_TLS_CA", "LEASH_TLS_CLIENT_CERT", "LEASH_TLS_CLIENT_KEY"


class Options(NamedTuple):
    """What the caller gave; None (False for ``tls``): take it from the environment."""

    url: str | None = None
    host: str | None = None
    port: int | None = None
    key_file: str | None = None
    key_id: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


def endpoint(options: Options, environ: Mapping[str, str] | None = None) -> Endpoint:
    """Where and how to connect; ``ValueError`` says what does not go together."""
    env = os.environ if environ is None else environ

    def get(given: str | None, name: str) -> str | None:
        return given if given is not None else (env.get(name) or None)

    if options.url is not None and (options.host is not None or options.port is not None):
        raise ValueError("give --url or --host/--port, not both")
    url = options.url
    if url is None and options.host is None and options.port is None:
        url = env.get(URL) or None
    if url is not None:
        found = parse_url(url)
    else:
        found = Endpoint(options.host or DEFAULT_HOST, options.port or DEFAULT_PORT)
    key_file, key_id = get(options.key_file, KEY_FILE), get(options.key_id, KEY_ID)
    if key_file is not None:
        found = found._replace(key=load_key(key_file, key_id))
    elif options.key_id is not None:
        raise ValueError("--key-id needs --key-file (or LEASH_KEY_FILE)")
    ca, cert = get(options.tls_ca, TLS_CA), get(options.tls_cert, TLS_CERT)
    key = get(options.tls_key, TLS_KEY)
    if options.tls or ca is not None or cert is not None or key is not None:
        found = found._replace(tls=tls_context(ca, cert, key))
    return found
