"""Authentication: the key file, and the proofs exchanged in the handshake.

Theory of operation (docs/protocol.md §4.5). The broker and a client share a
random secret key named by a key id. A handshake with a key goes::

    client -> hello{key_id, nonce: Nc}
    broker -> challenge{nonce: Ns, proof: HMAC(key, "leash-server" || T)}
    client -> auth{proof: HMAC(key, "leash-client" || T)}
    broker -> welcome

where T, the transcript, binds the protocol version, the key id, the worker id
and both nonces. Each side proves it holds the key over a nonce the other
side just chose, so a recorded handshake is worth nothing later; the broker
proves first, so a client never sends its proof to a peer that could not make
one. Keys are random (at least 32 bytes), so a transcript cannot be attacked
offline the way a password hash can. Digests are compared in constant time.

Pure: nonces and the time come from the caller; files are read by the shells
(the broker's and the client's), which hand the text and mode to this module.
"""

import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from leash.protocol import limits as L

TRANSCRIPT_TAG = b"leash-auth-v1"
SERVER_LABEL = b"leash-server"
CLIENT_LABEL = b"leash-client"
KEY_ID_PATTERN = L.NAME_PATTERN


class KeyFileError(ValueError):
    """A key file that cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True, slots=True)
class Key:
    """One shared key. ``secret`` is never shown in a repr or a log."""

    id: str
    secret: bytes = field(repr=False)
    not_after: datetime | None = None  # aware; the key is refused after this instant
    role: str = ""  # "admin": may also do what an operator does from the Faktory port

    def live(self, now: datetime) -> bool:
        return self.not_after is None or now <= self.not_after


# --- the proofs --------------------------------------------------------------------


def transcript(
    version: int, key_id: str, worker_id: str, client_nonce: bytes, server_nonce: bytes
) -> bytes:
    """What both proofs cover: each part as a 4-byte big-endian length, then its bytes."""
    parts = (
        TRANSCRIPT_TAG,
        version.to_bytes(4, "big"),
        key_id.encode(),
        worker_id.encode(),
        client_nonce,
        server_nonce,
    )
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def server_proof(secret: bytes, transcript: bytes) -> bytes:
    return hmac.new(secret, SERVER_LABEL + transcript, hashlib.sha256).digest()


def client_proof(secret: bytes, transcript: bytes) -> bytes:
    return hmac.new(secret, CLIENT_LABEL + transcript, hashlib.sha256).digest()


def proof_matches(expected: bytes, given: bytes) -> bool:
    """Constant-time comparison, so the time taken says nothing about the proof."""
    return hmac.compare_digest(expected, given)


# --- the key file ------------------------------------------------------------------

KeyId = Annotated[str, Meta(min_length=1, max_length=L.KEY_ID_MAX_CHARS, pattern=KEY_ID_PATTERN)]


ADMIN_ROLE = "admin"


class _KeyEntry(msgspec.Struct, forbid_unknown_fields=True):
    id: KeyId
    secret: str
    not_after: Annotated[datetime, Meta(tz=True)] | None = None
    role: Literal["admin"] | None = None


class _KeyFile(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[_KeyEntry] = []


def mode_problem(path: str, mode: int) -> str | None:
    """Why a key file with this ``st_mode`` may not be used, or None if it may."""
    if mode & 0o077:
        return (
            f"key file {path} can be read or written by others (mode {mode & 0o777:04o}); "
            f"it must be 0600 or stricter: chmod 600 {path}"
        )
    return None


def parse_key_file(text: bytes, path: str) -> list[Key]:
    """The keys of a key file (TOML: one ``[[keys]]`` table per key)."""
    try:
        parsed = msgspec.toml.decode(text, type=_KeyFile)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None
    if not parsed.keys:
        raise KeyFileError(f"key file {path} holds no [[keys]]; make one with: leash keygen")
    keys: list[Key] = []
    for index, entry in enumerate(parsed.keys):
        where = f"key file {path}, key {entry.id!r} ($.keys[{index}])"
        if any(key.id == entry.id for key in keys):
            raise KeyFileError(f"{where}: the id is used twice")
        secret = _secret_bytes(entry.secret, where)
        keys.append(Key(entry.id, secret, entry.not_after, entry.role or ""))
    return keys


def _secret_bytes(text: str, where: str) -> bytes:
    if not re.fullmatch(r"[0-9a-fA-F]*", text) or len(text) % 2:
        raise KeyFileError(f"{where}: the secret must be hexadecimal digits")
    secret = binascii.unhexlify(text)
    if len(secret) < L.KEY_SECRET_MIN_BYTES:
        raise KeyFileError(
            f"{where}: the secret is {len(secret)} bytes; it must be at least "
            f"{L.KEY_SECRET_MIN_BYTES} random bytes (make one with: leash keygen)"
        )
    return secret


def choose_key(keys: list[Key], key_id: str | None, now: datetime, path: str) -> Key:
    """The key a client uses: the one named, else the last live one in the file."""
    if key_id is not None:
        for key in keys:
            if key.id == key_id:
                if not key.live(now):
                    raise KeyFileError(f"key {key_id!r} in {path} expired at {key.not_after}")
                return key
        raise KeyFileError(f"key file {path} has no key {key_id!r}")
    live = [key for key in keys if key.live(now)]
    if not live:
        raise KeyFileError(f"every key in {path} has expired")
    return live[-1]


def key_file_text(key: Key) -> str:
    """One key as a ``[[keys]]`` table, as ``leash keygen`` prints it."""
    lines = ["[[keys]]", f'id = "{key.id}"', f'secret = "{key.secret.hex()}"']
    if key.not_after is not None:
        lines.append(f"not_after = {key.not_after.isoformat().replace('+00:00', 'Z')}")
    if key.role:
        lines.append(f'role = "{key.role}"')
    return "\n".join(lines) + "\n"
