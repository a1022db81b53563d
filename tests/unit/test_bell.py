"""A waiting thread's bell (client/_bell.py): a ring wakes the thread that
waits, a ring that came first is found by the next wait, a wait without a
ring gives up at its limit; each thread (and a forked child) has its own;
without poll a bell is a lock."""

import os
import select
import threading

import pytest

from leash.client import _bell
from leash.client._bell import Bell, bell

WAIT_S = 10.0
pytestmark = pytest.mark.timeout(30)


def _kinds() -> list[str]:
    return ["pipe", "lock"] if hasattr(select, "poll") else ["lock"]


@pytest.fixture(params=_kinds())
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "lock":
        monkeypatch.delattr(select, "poll", raising=False)
    return str(request.param)


def test_a_ring_wakes_the_thread_that_waits(kind: str) -> None:
    woke: list[bool] = []
    ready = threading.Event()
    bells: list[Bell] = []

    def waiter() -> None:
        bells.append(bell())
        ready.set()
        woke.append(bells[0].wait(WAIT_S))

    thread = threading.Thread(target=waiter)
    thread.start()
    assert ready.wait(WAIT_S)
    bells[0].ring()
    thread.join(WAIT_S)
    assert woke == [True]


def test_a_ring_before_the_wait_is_found_by_it(kind: str) -> None:
    own = bell()
    own.ring()
    assert own.wait(WAIT_S)


def test_a_wait_without_a_ring_gives_up_at_its_limit(kind: str) -> None:
    assert not bell().wait(0.02)


def test_each_thread_has_a_bell_of_its_own_and_a_forked_child_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not hasattr(select, "poll"):
        pytest.skip("bells are locks here: one a wait")
    mine = bell()
    assert bell() is mine  # kept for the thread's life
    theirs: list[Bell] = []
    thread = threading.Thread(target=lambda: theirs.append(bell()))
    thread.start()
    thread.join(WAIT_S)
    assert theirs and theirs[0] is not mine
    parent = os.getpid()
    monkeypatch.setattr(_bell.os, "getpid", lambda: parent + 1)  # as in a forked child
    assert bell() is not mine
