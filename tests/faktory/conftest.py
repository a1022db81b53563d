"""Fixtures of the Faktory-protocol tests: real brokers with a Faktory port
on 127.0.0.1 (port 0), each killed by its pid at the end."""

from collections.abc import Callable, Iterator

import pytest

from leash.client.admin import AdminClient
from tests.integration.broker_proc import BrokerProcess
from tests.integration.conftest import launch_broker, tls_files

__all__ = ["admin", "broker", "launch", "launch_broker", "tls_files"]  # fixtures imported

Launch = Callable[..., BrokerProcess]


@pytest.fixture
def launch(launch_broker: Launch) -> Launch:
    """Start brokers with a Faktory port and the extra flags given."""

    def start(*args: str) -> BrokerProcess:
        process = launch_broker("--faktory-port", "0", *args)
        assert process.faktory_port, "".join(process.log)
        return process

    return start


@pytest.fixture
def broker(launch: Launch) -> BrokerProcess:
    """A broker whose Faktory port allows MUTATE and FLUSH to everyone, as a
    test broker for the client libraries' own suites would."""
    return launch("--faktory-allow-mutate")


@pytest.fixture
def admin(broker: BrokerProcess) -> Iterator[AdminClient]:
    with broker.admin() as client:
        yield client
