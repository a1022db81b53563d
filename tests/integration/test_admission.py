"""Admission is fair: slow and failing handshakes from one address do not
lock the clients of another out (docs/protocol.md §4.5, §4.7).

A siege process (tests/integration/apps/siege.py) holds 1 000 connections
that never finish a hello and runs 300 loops guessing a key's secret, all
from 127.0.0.2, while this test connects keyed clients from 127.0.0.1 one
after another. Each address may hold 64 of the 256 places before the
handshake, and a failed guess is answered and closed at once (its address
waits before its next try, holding no place meanwhile), so nearly every
keyed client gets in. The share is printed and asserted; numbers of the
siege are printed too.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from leash.client import Client, LeashError
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import key_file, new_key, raise_fd_limit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIEGE_S = 6.0
CLIENTS = 40
CLIENT_TIMEOUT_S = 5.0
Launch = Callable[..., BrokerProcess]


@pytest.mark.parametrize(
    ("slowloris", "guessers"), [(1000, 300), (0, 300)], ids=["slow-and-guessing", "guessing"]
)
def test_keyed_clients_get_in_while_another_address_holds_slow_and_failing_handshakes(
    launch_broker: Launch, tmp_path: Path, slowloris: int, guessers: int
) -> None:
    raise_fd_limit()
    key = new_key("k-live")
    path = key_file(tmp_path / "keys.toml", key)
    broker = launch_broker("--key-file", path)
    siege = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.integration.apps.siege", str(broker.port)),
            *("127.0.0.2", str(slowloris), str(guessers), key.id, str(SIEGE_S)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert siege.stdout is not None
        assert siege.stdout.readline().strip() == "started", siege.stderr
        time.sleep(1.0)  # the guessers get going
        got_in, took_s = 0, []
        for _ in range(CLIENTS):
            started_s = time.monotonic()
            try:
                with Client("127.0.0.1", broker.port, key=path, timeout_s=CLIENT_TIMEOUT_S) as c:
                    c.beat()
                got_in += 1
            except (LeashError, OSError):
                pass
            took_s.append(time.monotonic() - started_s)
        still_running = siege.poll() is None
        out, err = siege.communicate(timeout=SIEGE_S + 30)
    finally:
        if siege.poll() is None:
            siege.kill()
            siege.wait(10)
    assert siege.returncode == 0, err
    counts = json.loads(out.strip().splitlines()[-1])
    print(
        f"{got_in} of {CLIENTS} keyed clients from 127.0.0.1 got in (slowest "
        f"{max(took_s):.2f} s) while 127.0.0.2 held slow handshakes and guessed: {counts}"
    )
    assert still_running, "the siege ended before the clients did: it proved nothing"
    if slowloris:  # its 64 places are taken: most guesses find none
        assert counts["slowloris_refused"] > 0, "the slow connections never met their limit"
        assert counts["guesses"] > guessers
    else:  # a guess is checked only once its address has waited out the last failure
        assert counts["checked"] > 0 and counts["refused_early"] > counts["checked"]
    assert got_in >= 0.9 * CLIENTS
    assert broker.alive()
