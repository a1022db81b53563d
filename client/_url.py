"""Broker addresses as URLs: ``leash://host:port`` and ``leashs://host:port`` (TLS).

The form is ``SCHEME://HOST[:PORT][?OPTION=VALUE&...]``; HOST may be a name,
an IPv4 address or a bracketed IPv6 address (``leash://[::1]:7420``); PORT
defaults to 7420. Options (each at most once; paths percent-encoded):

- ``key_file=PATH``: authenticate with a key from this key file;
  ``key_id=ID`` picks the key (default: the last live one in the file);
- ``leashs://`` only: ``ca=PATH`` (the CAs that sign the broker's certificate;
  default: the system's), ``cert=PATH`` and ``key=PATH`` (a client
  certificate, for a broker that asks for one).

No user, password, path or fragment: a secret never goes in a URL, only the
path of the file that holds it.
"""

import ssl
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from leash.protocol.auth import Key

from ._security import load_key, tls_context

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7420
SCHEMES = ("leash", "leashs")
_OPTIONS = {"leash": {"key_file", "key_id"}, "leashs": {"key_file", "key_id", "ca", "cert", "key"}}


class Endpoint(NamedTuple):
    host: str
    port: int
    tls: ssl.SSLContext | None = None
    key: Key | None = None


def parse_url(url: str) -> Endpoint:
    """Where and how to connect; ``ValueError`` says what is wrong with the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad broker URL {url!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"bad broker URL {url!r}: the scheme must be leash:// or leashs://")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.fragment:
        raise ValueError(f"bad broker URL {url!r}: expected {parts.scheme}://host:port[?options]")
    options = _options(url, parts.scheme, parts.query)
    key_file = options.get("key_file")
    if "key_id" in options and key_file is None:
        raise ValueError(f"bad broker URL {url!r}: key_id needs key_file")
    key = load_key(key_file, options.get("key_id")) if key_file is not None else None
    tls = None
    if parts.scheme == "leashs":
        tls = tls_context(options.get("ca"), options.get("cert"), options.get("key"))
    host = parts.hostname or DEFAULT_HOST
    return Endpoint(host, port if port is not None else DEFAULT_PORT, tls, key)


def _options(url: str, scheme: str, query: str) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=False, strict_parsing=bool(query))
    except ValueError as exc:
        raise ValueError(f"bad broker URL {url!r}: {exc}") from None
    unknown = set(parsed) - _OPTIONS[scheme]
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[scheme]))
        raise ValueError(
            f"bad broker URL {url!r}: unknown option {sorted(unknown)[0]!r} "
            f"({scheme}:// takes {allowed})"
        )
    repeated = [name for name, values in parsed.items() if len(values) > 1]
    if repeated:
        raise ValueError(f"bad broker URL {url!r}: option {repeated[0]!r} given twice")
    return {name: values[0] for name, values in parsed.items()}
