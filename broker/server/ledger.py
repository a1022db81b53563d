"""Apply, journal, reply: the second half of every request's path.

``commit`` applies records to the state (counting them in the totals) and
hands them to the group committer; ``reply`` sends a reply now when the
committer holds nothing it must wait for, or registers it to be sent when
the records before it are durable (``written``: once they are written, a
fetch's lease). ``roll_if_due`` moves to a new epoch before the counter
could run out. Every part of the shell that changes the state goes through
here: the request pipeline, the long-poll waiters, the tick timer and the
admin service.
"""

import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

from leash.broker import core
from leash.broker.core.records import Record
from leash.broker.journal.group_commit import GroupCommitter
from leash.broker.journal.log import Journal
from leash.broker.server.totals import Totals
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode

log = logging.getLogger("leash.server")
EXIT_APPLY_FAILED = 70
JOURNAL_FAILED = "the journal cannot be written; not acknowledged; the broker is stopping"


class Sender(Protocol):
    """A connection a reply can be sent on (TCP or admin)."""

    def send(self, reply: Any) -> None: ...


class Ledger:
    __slots__ = ("clock_ms", "committer", "journal", "stale", "state", "totals")

    def __init__(
        self,
        state: core.State,
        committer: GroupCommitter,
        journal: Journal,
        totals: Totals,
        clock_ms: Callable[[], int],
    ) -> None:
        self.state = state
        self.committer = committer
        self.journal = journal
        self.totals = totals
        self.clock_ms = clock_ms
        # A record was applied (or a fetch waits for a rate limit) since the
        # tick timer was last armed: the end of the turn re-arms it
        # (ticker.TickTimer.arm clears it).
        self.stale = False

    @property
    def failed(self) -> bool:
        """Whether the journal failed: every reply is journal_failed from now on."""
        return self.committer.failed is not None

    def commit(self, records: list[Record], *, sync: bool = True) -> None:
        """Apply records and queue them for the journal (``sync=False``: they
        start no fsync of their own; see ``GroupCommitter.submit_records``).
        A failure inside apply, or a record that does not encode, is a
        broken invariant: the state may be changed where the journal is not,
        so stop at once, before the records reach the journal (the encode is
        all or nothing). After a journal failure nothing more is applied:
        every reply is journal_failed anyway."""
        if self.committer.failed is not None:
            return
        now_ms = self.clock_ms()
        try:
            for record in records:
                self.totals.apply(self.state, record, now_ms)
            self.committer.submit_records(records, sync=sync)
        except BaseException:
            log.critical("apply failed; stopping without journalling it", exc_info=True)
            os._exit(EXIT_APPLY_FAILED)
        self.stale = True  # any record may bring a deadline closer

    def roll_if_due(self, now_ms: int) -> None:
        """Move to a new epoch before the counter could overflow into the
        epoch bits. Its record is synced before any later reply leaves,
        under every policy (as the boot record), so a token of the new
        epoch is never sent unless the epoch is durable."""
        rolled = core.roll_due(self.state, now_ms)
        if rolled:
            self.commit(rolled)
            self.journal.epoch = self.state.epoch  # the header of the next segment
            self.committer.hold_until_synced()
            log.info("epoch %d: the last epoch used up its numbers", self.state.epoch)

    def reply(self, connection: Sender, reply: Any, *, written: bool = False) -> None:
        """Send ``reply`` once everything journalled before it is durable
        (``written``: once it is written, before an fsync: a fetch's)."""
        committer = self.committer
        if committer.failed is None and not (committer.busy_written if written else committer.busy):
            connection.send(reply)
            return

        def done(durable: bool) -> None:
            if durable:
                connection.send(reply)
            else:
                connection.send(M.Error(reply.rid, ErrorCode.JOURNAL_FAILED, JOURNAL_FAILED))

        if written:
            committer.after_written(done)
        else:
            committer.after(done)
