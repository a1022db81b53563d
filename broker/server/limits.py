"""What the broker allows one connection, and the one log that reports refusals.

Every limit is a field of ``Limits`` (each one a ``leash serve`` flag; the
defaults are the ``*_DEFAULT*`` constants of protocol.limits, docs/protocol.md
§10.1). Limits on bytes are checked before anything is allocated for them:
frame lengths by the frame decoder before the body is buffered, job args on
the decoded request (whose args are a view of the frame, not a copy) before
the core sees it. Limits on time are enforced by ``guard.Guard``'s sweep.

Refusals are logged through ``RefusalLog``: one line each, with the peer's
address, but at most a few a second, so a flood of bad connections cannot
flood the log; the lines it held back are counted and reported.
"""

import ipaddress
import logging
import resource
import time
from collections.abc import Callable

import msgspec

from leash.protocol import limits as L
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode


class Limits(msgspec.Struct, frozen=True):
    max_connections: int = L.CONNECTIONS_MAX_DEFAULT
    max_unauthenticated: int = L.UNAUTHENTICATED_MAX_DEFAULT
    max_unauthenticated_per_address: int = L.UNAUTHENTICATED_PER_ADDRESS_MAX_DEFAULT
    handshake_timeout_ms: int = L.HANDSHAKE_TIMEOUT_DEFAULT_MS
    tls_handshake_timeout_ms: int = L.TLS_HANDSHAKE_TIMEOUT_DEFAULT_MS
    frame_timeout_ms: int = L.FRAME_TIMEOUT_DEFAULT_MS
    idle_timeout_ms: int = L.IDLE_TIMEOUT_HEARTBEATS * L.HEARTBEAT_DEFAULT_MS  # 0: never
    max_in_flight: int = L.IN_FLIGHT_MAX_DEFAULT
    max_outbound_bytes: int = L.OUTBOUND_MAX_BYTES_DEFAULT
    write_stall_ms: int = L.WRITE_STALL_DEFAULT_MS
    max_args_bytes: int = L.ARGS_MAX_BYTES_DEFAULT
    auth_fail_delay_ms: int = L.AUTH_FAIL_DELAY_DEFAULT_MS

    def describe(self, max_frame_bytes: int) -> str:
        """The one start-up log line that names every limit in force."""
        idle = f"{self.idle_timeout_ms} ms" if self.idle_timeout_ms else "never"
        return (
            f"limits: {self.max_connections} connections ({self.max_unauthenticated} "
            f"unauthenticated, {self.max_unauthenticated_per_address} from one address); "
            f"frames {L.HANDSHAKE_FRAME_MAX_BYTES} B before the handshake, "
            f"{max_frame_bytes} B after; args {self.max_args_bytes} B "
            f"({L.ARGS_DEPTH_MAX} levels deep); "
            f"{self.max_in_flight} requests in flight; outbound {self.max_outbound_bytes} B "
            f"or a {self.write_stall_ms} ms stall; handshake {self.handshake_timeout_ms} ms "
            f"(TLS {self.tls_handshake_timeout_ms} ms); frame {self.frame_timeout_ms} ms; "
            f"idle {idle}; after a failed authentication its source waits "
            f"{self.auth_fail_delay_ms} ms (doubling)"
        )


FD_HEADROOM = 64  # open files besides connections: journal, listener, admin
IPV6_SOURCE_PREFIX = 64  # an IPv6 host holds a whole /64: its addresses count as one


def source_address(host: str) -> str:
    """Who a connection comes from, for the limits and the delays kept per
    address: the IPv4 address, or the /64 network of an IPv6 one."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_SOURCE_PREFIX}", strict=False))
    return str(address)


def raise_fd_limit(max_connections: int) -> str | None:
    """Raise the soft open-file limit (up to the hard one) so ``max_connections`` fit.

    Returns a warning if even the hard limit is too low.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft != resource.RLIM_INFINITY and soft < wanted:
        return (
            f"the open-file limit ({soft}) is below the {max_connections} connections "
            f"allowed plus {FD_HEADROOM}: connections past it cannot be accepted "
            "(raise the hard limit, e.g. ulimit -Hn, or lower --max-connections)"
        )
    return None


def oversized_args(request: M.Request, max_args_bytes: int) -> M.Error | None:
    """The error for a push whose job args are over the limit, or None."""
    for path, spec in M.job_specs(request):
        if len(spec.args) > max_args_bytes:
            return _args_error(request.rid, len(spec.args), max_args_bytes, f"{path}.args")
    return None


def _args_error(rid: int, size: int, limit: int, path: str) -> M.Error:
    message = f"job args of {size} bytes are over the limit of {limit}"
    return M.Error(rid, ErrorCode.TOO_LARGE, message, path)


class RefusalLog:
    """Logs refusals at most ``rate_per_s`` a second (bursts up to ``burst``)."""

    def __init__(
        self,
        log: logging.Logger,
        rate_per_s: float = 5.0,
        burst: int = 20,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._rate_per_s = rate_per_s
        self._burst = burst
        self._clock_s = clock_s
        self._tokens = float(burst)
        self._last_s = clock_s()
        self.held_back = 0  # lines not logged since the last one that was

    def refused(self, peer: str, code: ErrorCode | str, message: str) -> None:
        """One line: who was refused, with which code, and why."""
        if self._take():
            self._log.info("refused %s: %s: %s%s", peer, code, message, self._held_note())
        else:
            self.held_back += 1

    def flush(self) -> None:
        """Report the lines held back, once the rate allows it (the guard calls this)."""
        if self.held_back and self._take():
            self._log.info("%d more refusals not logged", self.held_back)
            self.held_back = 0

    def _take(self) -> bool:
        now_s = self._clock_s()
        elapsed_s, self._last_s = now_s - self._last_s, now_s
        self._tokens = min(float(self._burst), self._tokens + elapsed_s * self._rate_per_s)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _held_note(self) -> str:
        if not self.held_back:
            return ""
        note = f" ({self.held_back} more refusals not logged before this one)"
        self.held_back = 0
        return note
