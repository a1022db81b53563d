"""The batch requests of the sans-IO client core (``ClientCore`` mixes them
in): create, commit and read the status of a batch. Each builds its request
and returns a ``Call``, like every method of ``leash.client._core``. Deleting a
batch is an operator's request (``leash.client.admin``)."""

from collections.abc import Sequence

from leash.protocol.messages import (
    BatchCallbacks,
    BatchCreated,
    BatchInfo,
    BatchView,
    CommitBatch,
    CreateBatch,
    GetBatchStatus,
    Reply,
    Request,
)

from ._calls import Call, expect_reply, ok_reply
from ._types import JobSpecLike, Lease, as_job_spec, callback_spec, lease_or_none, new_batch_id


class BatchCalls:
    def _take_rid(self) -> int:
        raise NotImplementedError

    def _encode(self, request: Request) -> bytes:
        raise NotImplementedError

    def create_batch(
        self,
        jobs: Sequence[JobSpecLike],
        *,
        id: str | None,
        description: str,
        parent: str | None,
        on_success: JobSpecLike | None,
        on_complete: JobSpecLike | None,
        on_death: JobSpecLike | None,
        commit: bool,
        lease: Lease | None,
    ) -> Call[BatchCreated]:
        rid = self._take_rid()
        callbacks = BatchCallbacks(
            success=callback_spec(on_success),
            complete=callback_spec(on_complete),
            death=callback_spec(on_death),
        )
        request = CreateBatch(
            rid=rid,
            id=id if id is not None else new_batch_id(),
            description=description,
            parent=parent,
            jobs=[as_job_spec(job) for job in jobs],
            commit=commit,
            lease=lease_or_none(lease),
        )
        if callbacks != request.callbacks:  # the default is left out of the frame
            request.callbacks = callbacks
        return Call(rid, self._encode(request), _batch_created)

    def commit_batch(self, id: str) -> Call[None]:
        rid = self._take_rid()
        return Call(rid, self._encode(CommitBatch(rid=rid, id=id)), ok_reply)

    def batch_status(self, id: str, limit: int) -> Call[BatchView]:
        rid = self._take_rid()
        return Call(rid, self._encode(GetBatchStatus(rid=rid, id=id, limit=limit)), _batch_view)


def _batch_created(reply: Reply) -> BatchCreated:
    return expect_reply(reply, BatchCreated)


def _batch_view(reply: Reply) -> BatchView:
    return expect_reply(reply, BatchInfo).batch
