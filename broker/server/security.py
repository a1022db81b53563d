"""What makes a broker safe to put on a network, decided once at start-up.

- Keys: ``--key-file`` names the keys the broker accepts (auth.Keyring); the
  file must be mode 0600 or stricter.
- Protected mode: a broker listens on loopback unless told otherwise, and
  refuses to listen anywhere else without a key file, unless
  ``--insecure-no-auth`` says so (which is logged as a warning). The Faktory
  port (``--faktory-port``) binds the same address and takes the keys as
  passwords, besides ``--faktory-password-file`` (faktory_auth.py). Listening
  beyond loopback without TLS is logged as a warning too: keys prove who
  connects, TLS keeps what they say private and whole. The metrics port
  follows the same rule (it has no keys of its own: beyond loopback it
  always serves anyone who reaches it, which is logged as a warning).
- TLS: ``--tls-cert`` and ``--tls-key`` make the listener speak TLS 1.2 or
  later; ``--tls-client-ca`` also requires a client certificate signed by
  one of those CAs.

Every problem is a ``SecurityError`` whose message says how to fix it; the
broker exits 78 with it.
"""

import ipaddress
import logging
import socket
import ssl
from typing import NamedTuple

from leash.broker.errors import BrokerError
from leash.broker.server.auth import Keyring
from leash.broker.server.config import ServerConfig
from leash.broker.server.faktory_auth import PasswordFileError, Passwords
from leash.broker.server.limits import raise_fd_limit
from leash.protocol.auth import KeyFileError

log = logging.getLogger("leash")


class SecurityError(BrokerError):
    pass


class Security(NamedTuple):
    keyring: Keyring | None
    tls: ssl.SSLContext | None
    passwords: Passwords  # the Faktory port's


def prepare(config: ServerConfig) -> Security:
    """Read the keys and certificates, and apply protected mode (or raise)."""
    try:
        keyring = Keyring(config.key_file) if config.key_file is not None else None
        passwords = Passwords(config.faktory_password_file, keyring)
    except (KeyFileError, PasswordFileError) as error:
        raise SecurityError(str(error)) from None
    tls = server_tls_context(config)
    if not is_loopback(config.host):
        where = config.host or "every interface"
        if keyring is None and not config.insecure_no_auth:
            raise SecurityError(
                f"refusing to listen on {where} without authentication (protected mode): "
                "give --key-file (make a key with: leash keygen), or bind 127.0.0.1, "
                "or accept the risk with --insecure-no-auth"
            )
        if keyring is None:
            log.warning("listening on %s with NO authentication (--insecure-no-auth)", where)
        if config.faktory_port is not None and not passwords.required:
            log.warning("the Faktory port on %s asks for NO password (--insecure-no-auth)", where)
        if tls is None:
            log.warning(
                "listening on %s without TLS: frames travel in clear text "
                "(give --tls-cert and --tls-key)",
                where,
            )
    _check_metrics(config, keyring)
    if keyring is not None:
        log.info("authentication on: key ids %s", ", ".join(sorted(keyring.keys)))
    fd_warning = raise_fd_limit(config.limits.max_connections)
    if fd_warning is not None:
        log.warning("%s", fd_warning)
    return Security(keyring, tls, passwords)


def _check_metrics(config: ServerConfig, keyring: Keyring | None) -> None:
    if config.metrics_port is None or is_loopback(config.metrics_host):
        return
    where = config.metrics_host or "every interface"
    if keyring is None and not config.insecure_no_auth:
        raise SecurityError(
            f"refusing to serve metrics on {where} without authentication (protected mode): "
            "bind --metrics-host 127.0.0.1, or give --key-file, or accept the risk with "
            "--insecure-no-auth"
        )
    log.warning(
        "metrics on %s are served to anyone who can reach them (queue names and counts)", where
    )


def server_tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None and config.tls_key is None:
        if config.tls_client_ca is not None:
            raise SecurityError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise SecurityError("TLS needs both --tls-cert and --tls-key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
        if config.tls_client_ca is not None:
            context.load_verify_locations(config.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise SecurityError(f"cannot load the TLS certificate, key or CA: {error}") from None
    return context


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(address).partition("%")[0]).is_loopback for address in addresses
    )
