"""TLS on the broker's listener (docs/protocol.md §4.6), against real processes.

The certificates come from a throwaway CA made for this test run
(tests/integration/tls_certs.py). Timing bounds are generous upper bounds
around the deadline under test, and never below it.
"""

import asyncio
import socket
import ssl
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from leash.client import AsyncClient, Client, ConnectionLost, tls_context
from leash.protocol import messages as M
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import frame, key_file, new_key
from tests.integration.tls_certs import TlsFiles

pytestmark = pytest.mark.timeout(90)
Launch = Callable[..., BrokerProcess]


def tls_args(files: TlsFiles) -> tuple[str, ...]:
    return ("--tls-cert", files.server_cert, "--tls-key", files.server_key)


def test_a_tls_broker_serves_clients_with_a_key_over_tls(
    launch_broker: Launch, tls_files: TlsFiles, tmp_path: Path
) -> None:
    key = new_key("k-tls")
    keys = key_file(tmp_path / "keys.toml", key)
    broker = launch_broker(*tls_args(tls_files), "--key-file", keys)
    assert broker.wait_for_log("(TLS,")
    with Client("127.0.0.1", broker.port, key=key, tls=tls_context(tls_files.ca)) as client:
        job_id = client.push("t", [1])
    url = f"leashs://127.0.0.1:{broker.port}?ca={tls_files.ca}&key_file={keys}"
    with Client.from_url(url) as client:
        job = client.fetch("default")
        assert job is not None and job.id == job_id
        client.ack(job)

    async def over_asyncio() -> str:
        async with await AsyncClient.from_url(url) as client:
            return await client.push("t")

    assert asyncio.run(over_asyncio())


def test_a_client_verifies_the_brokers_certificate(
    launch_broker: Launch, tls_files: TlsFiles
) -> None:
    broker = launch_broker(*tls_args(tls_files))
    with pytest.raises(ConnectionLost, match="CERTIFICATE_VERIFY_FAILED"):
        Client("127.0.0.1", broker.port, tls=tls_context(tls_files.other_ca))
    with pytest.raises(ConnectionLost, match="CERTIFICATE_VERIFY_FAILED"):
        Client("127.0.0.1", broker.port, tls=True)  # the system's CAs do not know ours
    assert broker.alive()


def test_tls_1_1_is_refused_and_1_2_accepted(launch_broker: Launch, tls_files: TlsFiles) -> None:
    broker = launch_broker(*tls_args(tls_files))

    def handshake(version: ssl.TLSVersion) -> str:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(tls_files.ca)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated
            context.minimum_version = context.maximum_version = version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
            try:
                with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                    return str(tls.version())
            except ssl.SSLError as exc:
                return f"refused: {exc.reason}"
            except ConnectionResetError:
                return "refused: reset"

    old, current = handshake(ssl.TLSVersion.TLSv1_1), handshake(ssl.TLSVersion.TLSv1_2)
    print(f"TLS 1.1 -> {old}; TLS 1.2 -> {current}")
    assert current == "TLSv1.2"
    assert old.startswith("refused")
    assert "NO_PROTOCOLS_AVAILABLE" not in old  # the client did offer TLS 1.1
    assert broker.alive()


def test_plain_tcp_on_the_tls_port_is_closed_at_once_without_flooding_the_log(
    launch_broker: Launch, tls_files: TlsFiles
) -> None:
    broker = launch_broker(*tls_args(tls_files))
    log_lines = len(broker.log)
    hello = frame(M.Hello(rid=1, version=1, worker_id="plain"))
    slowest_s = 0.0
    for _ in range(50):
        started_s = time.monotonic()
        with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
            sock.sendall(hello)
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        slowest_s = max(slowest_s, time.monotonic() - started_s)
    with pytest.raises(ConnectionLost):
        Client("127.0.0.1", broker.port, timeout_s=10)  # a plain client gets a clear error
    print(f"50 plain TCP connections: the slowest closed in {slowest_s:.3f} s")
    assert slowest_s < 2.0
    assert broker.alive()
    assert len(broker.log) - log_lines <= 5, broker.log[log_lines:]


def test_a_tls_handshake_that_never_finishes_is_closed_at_the_default_5_s(
    launch_broker: Launch, tls_files: TlsFiles
) -> None:
    broker = launch_broker(*tls_args(tls_files))
    sockets = []
    started_s = time.monotonic()
    for index in range(20):
        sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
        if index % 2:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
        sockets.append(sock)
    closed_after_s = []
    for sock in sockets:
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        closed_after_s.append(time.monotonic() - started_s)
        sock.close()
    print(f"never-finished TLS handshakes closed after {min(closed_after_s):.2f}-"
          f"{max(closed_after_s):.2f} s (timeout 5 s)")  # fmt: skip
    assert min(closed_after_s) >= 4.9
    assert max(closed_after_s) < 5 + 2.0
    assert broker.alive()


def test_client_certificates_are_required_when_a_client_ca_is_given(
    launch_broker: Launch, tls_files: TlsFiles
) -> None:
    broker = launch_broker(*tls_args(tls_files), "--tls-client-ca", tls_files.ca)
    with pytest.raises(ConnectionLost):
        Client("127.0.0.1", broker.port, tls=tls_context(tls_files.ca), timeout_s=10)
    with_cert = tls_context(tls_files.ca, tls_files.client_cert, tls_files.client_key)
    with Client("127.0.0.1", broker.port, tls=with_cert) as client:
        assert client.push("t")
    assert broker.alive()
