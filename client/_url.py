"""Broker addresses as URLs: ``leash://host:port``.

The form is ``leash://HOST[:PORT]``; HOST may be a name, an IPv4 address or
a bracketed IPv6 address (``leash://[::1]:7420``); PORT defaults to 7420.
Nothing else is accepted yet (no user, path, query or fragment): the
``leashs://`` scheme (TLS) and a key will be added to this one parser.
"""

from urllib.parse import urlsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7420
SCHEMES = ("leash",)


def parse_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of a ``leash://`` URL; ``ValueError`` says what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad broker URL {url!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"bad broker URL {url!r}: the scheme must be leash://")
    if (
        parts.username
        or parts.password
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(f"bad broker URL {url!r}: expected leash://host:port and nothing more")
    return parts.hostname or DEFAULT_HOST, port if port is not None else DEFAULT_PORT
