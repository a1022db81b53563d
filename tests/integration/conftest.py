"""Fixtures for client tests against the in-test fake broker."""

import os
from collections.abc import Iterator

import pytest

from tests.integration.broker_proc import BrokerProcess
from tests.integration.fake_broker import FakeBroker


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    broker = FakeBroker()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(tmp_path: "os.PathLike[str]") -> "Iterator[BrokerProcess]":
    """A real broker on 127.0.0.1 with its data in a temporary directory."""
    process = BrokerProcess(os.path.join(tmp_path, "data")).start()
    yield process
    process.kill()
