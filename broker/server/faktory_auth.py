"""Who may speak the Faktory protocol, and with which rights.

Passwords: the one in ``--faktory-password-file`` (mode 0600, like a key
file; what Faktory reads from its password file), and every live key of
``--key-file``, whose secret in hexadecimal is a password too. A key with
``role = "admin"`` may also MUTATE and FLUSH. With neither configured no
password is asked for (protected mode keeps such a broker on loopback).

The check is Faktory's: the ``HI`` carries a fresh random salt and a round
count; the client answers the hex of SHA-256 applied that many times to the
password and the salt (protocol/faktory.py). A client that says no protocol
version (Faktory's Python client of PyPI) hashes once, as Faktory lets it.
Digests are compared in constant time. Each round is a SHA-256 on the
broker's one thread, for every password it holds, so the count is modest:
the salt makes a recorded HELLO worth nothing on another connection, TLS
keeps the hash from being seen at all, and a key is random, so only a weak
password in the file is exposed to guessing from a recorded hash.
"""

import hmac
import logging
import secrets
from datetime import UTC, datetime
from typing import Final

from leash.broker.errors import BrokerError
from leash.broker.server.auth import Keyring, read_private_file
from leash.protocol import auth as A
from leash.protocol import faktory as F

log = logging.getLogger("leash.server")

HASH_ROUNDS: Final = 1_000  # SHA-256 rounds a password hash takes (Faktory: 4000 to 8096)
SALT_BYTES: Final = 8
PASSWORD_MAX_BYTES: Final = 4096
PLAIN, ADMIN = "", A.ADMIN_ROLE


class PasswordFileError(BrokerError, ValueError):
    pass


def read_password_file(path: str) -> str:
    """The password in ``path`` (surrounding white space dropped)."""
    data = read_private_file(path, "password file", PasswordFileError, PASSWORD_MAX_BYTES + 1)
    try:
        password = data.decode().strip()
    except UnicodeDecodeError:
        raise PasswordFileError(f"password file {path} is not UTF-8 text") from None
    if not password or len(data) > PASSWORD_MAX_BYTES:
        raise PasswordFileError(
            f"password file {path} must hold one password of 1 to {PASSWORD_MAX_BYTES} bytes"
        )
    return password


class Passwords:
    """The passwords the Faktory port takes; reloaded on SIGHUP."""

    def __init__(self, path: str | None, keyring: Keyring | None) -> None:
        self.path = path
        self.keyring = keyring
        self.password = read_password_file(path) if path is not None else None

    @property
    def required(self) -> bool:
        return self.password is not None or self.keyring is not None

    def reload(self) -> None:
        if self.path is None:
            return
        try:
            self.password = read_password_file(self.path)
        except PasswordFileError as error:
            log.error("password file not reloaded, the old password stays in force: %s", error)
            return
        log.info("password file %s reloaded", self.path)

    @staticmethod
    def new_salt() -> str:
        return secrets.token_hex(SALT_BYTES)

    def check(self, hello: F.Hello, salt: str) -> str | None:
        """The rights of the password the HELLO proves (PLAIN or ADMIN), or None."""
        rounds = HASH_ROUNDS if hello.version is not None and hello.version >= F.VERSION else 1
        given = (hello.pwdhash or "").encode()
        rights: str | None = None
        for password, role in self._candidates():
            expected = F.password_hash(password, salt, rounds).encode()
            if hmac.compare_digest(expected, given):  # every candidate is hashed: no early exit
                rights = ADMIN if role == ADMIN or rights == ADMIN else PLAIN
        return rights

    def _candidates(self) -> list[tuple[str, str]]:
        found = [(self.password, PLAIN)] if self.password is not None else []
        if self.keyring is not None:
            now = datetime.now(UTC)
            found += [(k.secret.hex(), k.role) for k in self.keyring.keys.values() if k.live(now)]
        return found
