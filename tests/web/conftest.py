"""Fixtures for the dashboard: a real broker and a real ``leash web`` beside
it, both on 127.0.0.1 with ports the OS picks, each stopped by its pid."""

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx
import pytest

from leash.client.admin import AdminClient
from tests.integration.broker_proc import BrokerProcess

HTTP_TIMEOUT_S = 30.0


class WebProcess(BrokerProcess):
    """``python -m leash.web`` against a broker's admin socket."""

    listening = re.compile(r"dashboard on https?://127\.0\.0\.1:(\d+)/")

    def command(self) -> list[str]:
        return [
            self.python, "-m", "leash.web",
            "--host", "127.0.0.1", "--port", "0", "--data-dir", self.data_dir,
            *self.extra_args,
        ]  # fmt: skip


@dataclass
class Dashboard:
    broker: BrokerProcess
    web: WebProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web.port}"

    @contextlib.contextmanager
    def http(self, *, csrf: bool = True) -> Iterator[httpx.Client]:
        """A client with its own session: the cookie and (``csrf``) the
        session's CSRF token in the header a page's script sends."""
        with httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT_S) as client:
            token = client.get("/api/session").json()["csrf"]
            if csrf:
                client.headers["X-CSRF-Token"] = token
            yield client

    def admin(self) -> AdminClient:
        return self.broker.admin()


@pytest.fixture
def start_dashboard(
    tmp_path: "os.PathLike[str]",
) -> Iterator[Callable[..., Dashboard]]:
    """Start a broker and ``leash web`` for it (extra flags for the web)."""
    started: list[BrokerProcess] = []

    def start(web_args: Sequence[str] = (), broker_args: Sequence[str] = ()) -> Dashboard:
        data_dir = os.path.join(tmp_path, f"data-{len(started)}")
        broker = BrokerProcess(data_dir, broker_args).start()
        started.append(broker)
        web = WebProcess(data_dir, web_args, python=sys.executable)
        started.append(web)
        web.start()
        return Dashboard(broker, web)

    yield start
    for process in reversed(started):
        process.kill()


@pytest.fixture
def dashboard(start_dashboard: Callable[..., Dashboard]) -> Dashboard:
    return start_dashboard(["--refresh-s", "1"])
