"""Who may use the dashboard: a password hashed at rest, or a broker key.

- The password file holds one line, ``scrypt$N$r$p$salt$hash`` (base64),
  made by ``leash web-password``; the password itself is never stored. It
  must be mode 0600 or stricter, like a key file.
- A key file (the broker's format, ``leash keygen``) lets a key sign in
  too: ``KEY_ID:SECRET`` as the password on the login page, or
  ``Authorization: Bearer KEY_ID:SECRET`` on any API request (no session
  and no CSRF token then: a browser never sends that header by itself).
- A wrong password or key is answered after a delay: 1 s, doubled for each
  recent failure from the same address (at most 16 s), as the broker does
  for a wrong key (``leash.broker.server.auth.FailureTable``).

Everything compares in constant time; secrets are never logged.
"""

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Final

from leash.broker.server.auth import read_key_file, read_private_file
from leash.protocol.auth import Key, KeyFileError

SCRYPT_N: Final = 2**15  # about 50 ms and 32 MiB per check on this class of machine
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
HASH_BYTES: Final = 32
PASSWORD_MIN_CHARS: Final = 12
PASSWORD_MAX_CHARS: Final = 1024
FILE_MAX_BYTES: Final = 4096


class CredentialsError(ValueError):
    """A password file or key file that cannot be used; the message says why."""


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """The line a password file holds for ``password``."""
    if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
        raise CredentialsError(
            f"a password has {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters"
        )
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    parts = ("scrypt", str(n), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest))
    return "$".join(parts)


class PasswordHash:
    """A password file's hash, to check passwords against."""

    def __init__(self, line: str, path: str) -> None:
        parts = line.strip().split("$")
        try:
            if len(parts) != 6 or parts[0] != "scrypt":
                raise ValueError("not scrypt$N$r$p$salt$hash")
            self.n, self.r, self.p = int(parts[1]), int(parts[2]), int(parts[3])
            self.salt, self.digest = _unb64(parts[4]), _unb64(parts[5])
            if self.n < 2**14 or self.n & (self.n - 1) or not 1 <= self.r * self.p <= 64:
                raise ValueError("scrypt parameters out of range")
        except ValueError as error:
            raise CredentialsError(
                f"password file {path}: {error} (make one with: leash web-password)"
            ) from None

    def matches(self, password: str) -> bool:
        if len(password) > PASSWORD_MAX_CHARS:
            return False
        given = _scrypt(password, self.salt, self.n, self.r, self.p)
        return hmac.compare_digest(given, self.digest)


def read_password_file(path: str) -> PasswordHash:
    data = read_private_file(path, "password file", CredentialsError, FILE_MAX_BYTES)
    try:
        return PasswordHash(data.decode("ascii"), path)
    except UnicodeDecodeError:
        raise CredentialsError(f"password file {path}: not one line of ASCII") from None


class Credentials:
    """What the dashboard accepts: a password hash, keys, both, or nothing
    (then no one signs in: only a loopback bind is allowed)."""

    def __init__(self, password: PasswordHash | None, keys: list[Key]) -> None:
        self.password = password
        self.keys = {key.id: key for key in keys}

    @classmethod
    def load(cls, password_file: str | None, key_file: str | None) -> "Credentials":
        password = read_password_file(password_file) if password_file else None
        try:
            keys = read_key_file(key_file) if key_file else []
        except KeyFileError as error:
            raise CredentialsError(str(error)) from None
        return cls(password, keys)

    @property
    def required(self) -> bool:
        return self.password is not None or bool(self.keys)

    def check(self, secret: str) -> bool:
        """A password, or ``KEY_ID:SECRET`` of a live key."""
        if self.key_matches(secret):
            return True
        return self.password is not None and self.password.matches(secret)

    def key_matches(self, text: str) -> bool:
        key_id, colon, secret = text.partition(":")
        key = self.keys.get(key_id) if colon else None
        if key is None or not key.live(datetime.now(UTC)):
            return False
        try:
            given = bytes.fromhex(secret.strip())
        except ValueError:
            return False
        return hmac.compare_digest(given, key.secret)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    memory_bytes = 128 * r * (n + p + 2)
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=memory_bytes, dklen=HASH_BYTES
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("a part is not base64") from None
