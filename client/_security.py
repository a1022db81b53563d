"""The client's key and TLS settings, as the connection options take them.

``key``: a ``Key`` (id and secret), or the path of a key file (the same TOML
format the broker reads, mode 0600 or stricter); from a file the client uses
the key named by ``key_id``, else the last key in the file that has not
expired. With a key, a client authenticates every connection and refuses a
broker that cannot prove it holds the same key (``BrokerNotVerified``).

``tls``: ``True`` (verify the broker against the system's CAs), an
``ssl.SSLContext`` (anything ``tls_context`` makes, or your own), or
None/False for plain TCP.
"""

import os
import ssl
from datetime import UTC, datetime

from leash.protocol.auth import Key, KeyFileError, choose_key, mode_problem, parse_key_file

KeyOption = Key | str | os.PathLike[str] | None
TlsOption = bool | ssl.SSLContext | None


def load_key(path: str | os.PathLike[str], key_id: str | None = None) -> Key:
    """The key a client uses from the key file at ``path``."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        problem = mode_problem(path, os.fstat(fd).st_mode)
        if problem is not None:
            raise KeyFileError(problem)
        keys = parse_key_file(file.read(), path)
    return choose_key(keys, key_id, datetime.now(UTC), path)


def as_key(key: KeyOption) -> Key | None:
    if key is None or isinstance(key, Key):
        return key
    return load_key(key)


def tls_context(
    ca: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A client TLS context: verify the broker (against ``ca``, else the system's
    CAs and its host name), TLS 1.2 or later, and present ``cert``/``key`` if given."""
    context = ssl.create_default_context(cafile=os.fspath(ca) if ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(os.fspath(cert), os.fspath(key) if key is not None else None)
    elif key is not None:
        raise ValueError("a TLS client key needs its certificate (cert=)")
    return context


def as_tls(tls: TlsOption) -> ssl.SSLContext | None:
    if tls is None or tls is False:
        return None
    if tls is True:
        return tls_context()
    return tls
