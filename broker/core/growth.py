"""Which requests grow the state: what a broker low on disk refuses.

A request that can add jobs or batches makes the journal and the
next snapshot bigger for as long as the jobs live; every other request
ends, moves or reads what exists. When the disk is low the shell refuses
the growing ones with ``disk_full`` and serves the rest, so workers can
drain the queues. Add a request type here when it can create state.
"""

from leash.protocol import faktory as F
from leash.protocol import messages as M

GROWING_REQUESTS: tuple[type, ...] = (M.Push, M.PushMany, M.CreateBatch, F.Push, F.PushBulk)


def grows_state(request: object) -> bool:
    return isinstance(request, GROWING_REQUESTS)
