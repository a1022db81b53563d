"""Connection limits, pure parts: defaults, flags, the args check, the refusal
log, the guard's deadlines (with fake connections and given times), protected
mode. docs/protocol.md §4.7 and §10.1."""

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

from leash.broker.cli import config_of
from leash.broker.server.config import ServerConfig
from leash.broker.server.connection import Connection
from leash.broker.server.guard import CLOSE_LINGER_S, Guard, sweep_period_s
from leash.broker.server.limits import Limits, RefusalLog, oversized_args, raise_fd_limit
from leash.broker.server.security import SecurityError, is_loopback, prepare
from leash.protocol import auth as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import FrameDecoder
from tests.virtual_time import VirtualClock

# --- defaults: the numbers the issue states ---------------------------------------

ISSUE_DEFAULTS = {
    "max_connections": 10_000,
    "max_unauthenticated": 256,
    "max_unauthenticated_per_address": 64,
    "handshake_timeout_ms": 2_000,
    "tls_handshake_timeout_ms": 5_000,
    "frame_timeout_ms": 30_000,
    "idle_timeout_ms": 3 * 5_000,  # three heartbeat periods
    "max_in_flight": 1_024,
    "max_outbound_bytes": 8 * 1024 * 1024,
    "write_stall_ms": 10_000,
    "max_args_bytes": 1024 * 1024,
    "auth_fail_delay_ms": 1_000,
}


@pytest.mark.parametrize(("name", "value"), ISSUE_DEFAULTS.items())
def test_each_default_limit_is_the_one_the_issue_states(name: str, value: int) -> None:
    assert getattr(Limits(), name) == value
    assert getattr(config_of([]).limits, name) == value
    assert getattr(ServerConfig().limits, name) == value


def test_the_frame_limits_are_4_kib_before_the_handshake_and_1_mib_after() -> None:
    assert ServerConfig().max_frame_bytes == 1024 * 1024
    assert FrameDecoder.__init__.__defaults__ == (1024 * 1024,)
    from leash.broker.server.connection import HANDSHAKE_FRAME_MAX_BYTES

    assert HANDSHAKE_FRAME_MAX_BYTES == 4096


def test_the_idle_timeout_follows_the_heartbeat_unless_given() -> None:
    config = config_of(["--heartbeat-ms", "700", "--process-ttl-ms", "5000"])
    assert config.limits.idle_timeout_ms == 2_100
    assert config_of(["--idle-timeout-ms", "0"]).limits.idle_timeout_ms == 0


@pytest.mark.parametrize(
    "flag", ["--max-connections", "--max-in-flight", "--frame-timeout-ms", "--max-args-bytes"]
)
def test_every_limit_is_a_serve_flag(flag: str) -> None:
    limits = config_of([flag, "4242"]).limits
    assert getattr(limits, flag.removeprefix("--").replace("-", "_")) == 4242


@pytest.mark.parametrize("argv", [["--max-connections", "0"], ["--frame-timeout-ms", "1"]])
def test_a_limit_out_of_bounds_is_a_configuration_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        config_of(argv)
    assert exited.value.code == 78


def test_the_start_up_line_names_every_limit() -> None:
    line = Limits().describe(1024 * 1024)
    for number in ("10000", "256", "4096 B", "1048576 B", "1024", "8388608", "30000", "15000"):
        assert number in line


# --- job args ----------------------------------------------------------------------


def spec(args_bytes: int) -> M.JobSpec:
    return M.JobSpec(
        type="t", args=msgspec.Raw(b"\xc4" + bytes([args_bytes - 2]) + b"x" * (args_bytes - 2))
    )


def test_args_at_the_limit_pass_and_one_byte_more_is_too_large_with_its_path() -> None:
    assert oversized_args(M.Push(1, spec(100)), 100) is None
    error = oversized_args(M.Push(1, spec(101)), 100)
    assert error is not None and (error.code, error.path) == (ErrorCode.TOO_LARGE, "$.job.args")
    many = M.PushMany(2, [spec(10), spec(10), spec(101)])
    error = oversized_args(many, 100)
    assert error is not None and (error.rid, error.path) == (2, "$.jobs[2].args")
    assert oversized_args(M.Beat(3), 100) is None


def test_the_jobs_and_callbacks_of_a_new_batch_are_held_to_the_same_limit() -> None:
    fits = M.CreateBatch(4, jobs=[spec(100)], callbacks=M.BatchCallbacks(success=spec(100)))
    assert oversized_args(fits, 100) is None
    error = oversized_args(M.CreateBatch(4, jobs=[spec(10), spec(101)]), 100)
    assert error is not None and (error.rid, error.path) == (4, "$.jobs[1].args")
    death = M.CreateBatch(5, callbacks=M.BatchCallbacks(death=spec(101)))
    error = oversized_args(death, 100)
    assert error is not None and error.path == "$.callbacks.death.args"


# --- the refusal log ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_refusals_are_logged_at_a_bounded_rate_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    refusals = RefusalLog(logging.getLogger("t"), rate_per_s=2, burst=3, clock_s=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        for index in range(100):
            refusals.refused(f"10.0.0.{index}:1", ErrorCode.TOO_LARGE, "too big")
        assert len(caplog.records) == 3 and refusals.held_back == 97
        clock.now_s = 0.5  # one more line's worth
        refusals.flush()
        assert caplog.records[-1].getMessage() == "97 more refusals not logged"
        clock.now_s = 1.0
        refusals.refused("10.0.0.1:1", ErrorCode.TOO_LARGE, "too big")
    assert len(caplog.records) == 5
    assert "refused 10.0.0.0:1: too_large: too big" in caplog.records[0].getMessage()


# --- the guard ---------------------------------------------------------------------


class FakeDecoder:
    in_frame = False


class Peer:
    """What the guard reads of a connection, and what it does to one."""

    PAUSED_FOR_WRITES = Connection.PAUSED_FOR_WRITES

    def __init__(
        self, greeted: bool = True, idle_timeout_ms: int = 5_000, host: str = "127.0.0.1"
    ) -> None:
        self.greeted = greeted
        self.idle_timeout_ms = idle_timeout_ms  # the limit's (0 for the Faktory port's)
        self.host, self.source = host, "?"
        self.reading = True
        self.closed, self.closed_s = False, 0.0
        self.frames_in = self.frames_out = self.in_flight = 0
        self.seen_in = self.seen_out = 0
        self.frame_mark, self.frame_since_s = -1, 0.0
        self.active_s = self.deadline_s = self.write_paused_s = 0.0
        self.paused = 0
        self.decoder = FakeDecoder()
        self.peer = "127.0.0.1:1"
        self.refused: list[ErrorCode] = []
        self.aborted = False

    def refuse(self, code: ErrorCode, message: str) -> None:
        self.refused.append(code)
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True


LIMITS = Limits(handshake_timeout_ms=2_000, frame_timeout_ms=3_000, idle_timeout_ms=5_000)


@pytest.fixture
async def guard() -> Guard:
    return Guard(LIMITS, set(), RefusalLog(logging.getLogger("t")), VirtualClock())


def check(guard: Guard, peer: Peer, now_s: float) -> None:
    guard.check(peer, now_s)  # type: ignore[arg-type]


async def test_a_connection_not_welcomed_by_its_deadline_is_closed(guard: Guard) -> None:
    peer = Peer(greeted=False)
    peer.deadline_s = 2.0
    check(guard, peer, 1.99)
    assert peer.refused == []
    check(guard, peer, 2.0)
    assert peer.refused == [ErrorCode.HANDSHAKE_TIMEOUT]


async def test_a_doomed_connection_waits_for_its_delayed_error_not_the_deadline(
    guard: Guard,
) -> None:
    peer = Peer(greeted=False)
    peer.deadline_s, peer.reading = 2.0, False
    check(guard, peer, 10.0)
    assert peer.refused == []


async def test_an_idle_connection_is_closed_never_earlier_than_the_idle_timeout(
    guard: Guard,
) -> None:
    peer = Peer()
    peer.frames_in = 1  # a frame arrived before the sweep at 1.0
    check(guard, peer, 1.0)
    check(guard, peer, 5.99)
    assert peer.refused == []
    check(guard, peer, 6.0)
    assert peer.refused == [ErrorCode.IDLE_TIMEOUT]


async def test_a_connection_without_an_idle_timeout_is_never_idle(guard: Guard) -> None:
    peer = Peer(idle_timeout_ms=0)  # a Faktory port's connection
    peer.frames_in = 1
    for now_s in (1.0, 6.0, 3600.0):
        check(guard, peer, now_s)
    assert peer.refused == []


@pytest.mark.parametrize("activity", ["frame in", "frame out", "in flight"])
async def test_activity_keeps_a_connection_from_idling(guard: Guard, activity: str) -> None:
    peer = Peer()
    for now_s in range(0, 60, 4):
        if activity == "frame in":
            peer.frames_in += 1
        elif activity == "frame out":
            peer.frames_out += 1
        else:
            peer.in_flight = 1  # a held fetch
        check(guard, peer, float(now_s))
    assert peer.refused == []


async def test_a_frame_begun_and_not_finished_is_closed_at_its_deadline(guard: Guard) -> None:
    peer = Peer()
    peer.decoder.in_frame = True
    check(guard, peer, 10.0)  # first seen begun; the idle timeout (5 s) does not apply
    check(guard, peer, 12.99)
    assert peer.refused == []
    check(guard, peer, 13.0)
    assert peer.refused == [ErrorCode.FRAME_TIMEOUT]


async def test_frames_that_complete_restart_the_frame_clock(guard: Guard) -> None:
    peer = Peer()
    peer.decoder.in_frame = True  # always a frame begun, but a new one each sweep
    for now_s in range(20):
        peer.frames_in += 1
        check(guard, peer, float(now_s))
    assert peer.refused == []


async def test_a_write_stall_aborts_the_connection(guard: Guard) -> None:
    peer = Peer()
    peer.paused, peer.write_paused_s = Peer.PAUSED_FOR_WRITES, 1.0
    check(guard, peer, 10.99)
    assert not peer.aborted
    check(guard, peer, 11.0)
    assert peer.aborted


async def test_a_closed_connection_that_cannot_flush_is_aborted(guard: Guard) -> None:
    peer = Peer()
    peer.closed, peer.closed_s = True, 1.0
    check(guard, peer, 1.0 + CLOSE_LINGER_S - 0.01)
    assert not peer.aborted
    check(guard, peer, 1.0 + CLOSE_LINGER_S)
    assert peer.aborted


async def test_admission_counts_and_refuses_beyond_the_limits() -> None:
    limits = Limits(max_connections=3, max_unauthenticated=2)
    connections: set[Any] = set()
    guard = Guard(limits, connections, RefusalLog(logging.getLogger("t")), VirtualClock())
    peers = [Peer(greeted=False) for _ in range(4)]
    for peer in peers:
        peer.admitted = False  # type: ignore[attr-defined]
    assert [guard.admit(p) for p in peers[:3]] == [True, True, False]  # type: ignore[arg-type]
    assert peers[2].refused == [ErrorCode.TOO_MANY_CONNECTIONS]
    peers[0].greeted = True
    guard.welcomed(peers[0])  # type: ignore[arg-type]
    assert guard.admit(peers[3])  # type: ignore[arg-type]
    assert len(connections) == 3 and guard.unauthenticated == 2
    guard.lost(peers[1])  # type: ignore[arg-type]
    assert len(connections) == 2 and guard.unauthenticated == 1


async def test_one_address_takes_at_most_its_share_of_the_places_before_the_handshake() -> None:
    limits = Limits(max_unauthenticated=5, max_unauthenticated_per_address=2)
    guard = Guard(limits, set(), RefusalLog(logging.getLogger("t")), VirtualClock())

    def admitted(*hosts: str) -> list[bool]:
        return [guard.admit(Peer(greeted=False, host=host)) for host in hosts]  # type: ignore[arg-type]

    assert admitted("10.0.0.9", "10.0.0.9", "10.0.0.9") == [True, True, False]
    # an IPv6 host owns its /64; an IPv4-mapped address is the IPv4 one
    assert admitted("2001:db8::1", "2001:db8::2", "2001:db8::3%eth0") == [True, True, False]
    assert admitted("::ffff:10.0.0.9", "10.0.0.7") == [False, True]  # and the total is 5
    assert guard.unauthenticated_from == {"10.0.0.9": 2, "2001:db8::/64": 2, "10.0.0.7": 1}
    assert admitted("10.0.0.8") == [False]


async def test_a_welcome_or_a_close_gives_the_address_its_place_back() -> None:
    limits = Limits(max_unauthenticated_per_address=1)
    guard = Guard(limits, set(), RefusalLog(logging.getLogger("t")), VirtualClock())
    first, second = Peer(greeted=False, host="10.0.0.9"), Peer(greeted=False, host="10.0.0.9")
    assert guard.admit(first)  # type: ignore[arg-type]
    assert not guard.admit(second)  # type: ignore[arg-type]
    first.greeted = True
    guard.welcomed(first)  # type: ignore[arg-type]
    assert guard.admit(second)  # type: ignore[arg-type]
    guard.lost(second)  # type: ignore[arg-type]
    guard.lost(first)  # type: ignore[arg-type]
    assert guard.unauthenticated_from == {} and guard.unauthenticated == 0


def test_the_sweep_runs_at_least_twice_a_second_and_four_times_per_shortest_timeout() -> None:
    assert sweep_period_s(Limits()) == 0.5
    assert sweep_period_s(Limits(handshake_timeout_ms=400)) == 0.1
    assert sweep_period_s(Limits(idle_timeout_ms=0, frame_timeout_ms=60)) == 0.02


# --- protected mode ---------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "192.168.0.7"])
def test_addresses_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_protected_mode_refuses_a_wide_bind_without_a_key() -> None:
    with pytest.raises(SecurityError, match="protected mode"):
        prepare(ServerConfig(host="0.0.0.0"))


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", ""])
def test_protected_mode_refuses_metrics_beyond_loopback_without_a_key(host: str) -> None:
    with pytest.raises(SecurityError, match=r"metrics on .*\(protected mode\)"):
        prepare(ServerConfig(metrics_host=host, metrics_port=9100))
    prepare(ServerConfig(metrics_host=host))  # no metrics port: nothing is served there
    prepare(ServerConfig(metrics_host="127.0.0.1", metrics_port=9100))


def test_metrics_beyond_loopback_with_a_key_or_insecure_no_auth_start_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(A.key_file_text(A.Key("k", b"k" * 32)))
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="leash"):
        prepare(ServerConfig(metrics_host="0.0.0.0", metrics_port=9100, key_file=str(path)))
        prepare(ServerConfig(metrics_host="0.0.0.0", metrics_port=9100, insecure_no_auth=True))
    warned = [r for r in caplog.records if "metrics on 0.0.0.0 are served to anyone" in r.message]
    assert len(warned) == 2


def test_insecure_no_auth_allows_it_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="leash"):
        security = prepare(ServerConfig(host="0.0.0.0", insecure_no_auth=True))
    assert security.keyring is None
    messages = [record.getMessage() for record in caplog.records]
    assert any("NO authentication" in message for message in messages)
    assert any("without TLS" in message for message in messages)


def test_a_key_allows_a_wide_bind_and_warns_only_about_tls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(A.key_file_text(A.Key("k", b"k" * 32)))
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="leash"):
        security = prepare(ServerConfig(host="0.0.0.0", key_file=str(path)))
    assert security.keyring is not None and list(security.keyring.keys) == ["k"]
    assert [r.getMessage() for r in caplog.records if "without TLS" in r.getMessage()]
    assert not [r for r in caplog.records if "NO authentication" in r.getMessage()]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"tls_cert": "c.pem"}, "both --tls-cert and --tls-key"),
        ({"tls_client_ca": "ca.pem"}, "--tls-client-ca needs"),
        ({"tls_cert": "/nope.pem", "tls_key": "/nope.key"}, "cannot load"),
    ],
)
def test_incomplete_tls_settings_are_refused(fields: dict[str, str], says: str) -> None:
    with pytest.raises(SecurityError, match=says):
        prepare(ServerConfig(**fields))  # type: ignore[arg-type]


def test_the_open_file_limit_is_raised_for_the_connections_or_a_warning_given() -> None:
    assert raise_fd_limit(100) is None
    warning = raise_fd_limit(10**9)
    assert warning is not None and "open-file limit" in warning
