"""The pure core driven as the broker's shell drives it, in this process:
a sign of life from the worker, ``decide``, then ``apply`` every record; a
clock the caller moves. No checks per record (the core tests do those):
for measuring what the core costs and what it keeps (bench/purge_cost.py,
tests/unit/test_core_memory.py)."""

from leash.broker.core import CoreConfig, State, apply, boot, decide, info_of, touch
from leash.protocol import messages as M

START_MS = 1_700_000_000_000
WORKER = "bench"


class CoreDriver:
    def __init__(self, config: CoreConfig | None = None) -> None:
        self.state = State(config)
        self.now_ms = START_MS
        self.rid = 0
        self.info = info_of(M.Hello(rid=0, version=1, worker_id=WORKER))
        apply(self.state, boot(self.state, self.now_ms))

    def next(self) -> int:
        """The next request id."""
        self.rid += 1
        return self.rid

    def send(self, request: M.Request) -> M.Reply:
        for record in touch(self.state, WORKER, self.info, self.now_ms):
            apply(self.state, record)
        outcome = decide(self.state, request, WORKER, self.now_ms)
        for record in outcome.records:
            apply(self.state, record)
        return outcome.reply
