"""Fixtures for client tests against the in-test fake broker."""

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.integration.broker_proc import BrokerProcess
from tests.integration.fake_broker import FakeBroker

if TYPE_CHECKING:
    from tests.integration.tls_certs import TlsFiles


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


@pytest.fixture
def launch_broker(tmp_path: "os.PathLike[str]") -> "Iterator[Callable[..., BrokerProcess]]":
    """Start real brokers with extra flags (127.0.0.1, port 0); each is killed by pid."""
    started: list[BrokerProcess] = []

    def launch(*args: str) -> BrokerProcess:
        data_dir = os.path.join(tmp_path, f"data-{len(started)}")
        process = BrokerProcess(data_dir, args).start()
        started.append(process)
        return process

    yield launch
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> "TlsFiles":
    """A throwaway CA, server and client certificates for this test run."""
    from tests.integration.tls_certs import make_tls_files

    return make_tls_files(tmp_path_factory.mktemp("tls"))
