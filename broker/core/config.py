"""Core limits that are configuration rather than protocol: the dead set's
bounds, how much one tick may do, process and batch lifetimes, how many
leases a job may lose in a row, and two trades of memory for CPU that
change no behaviour: how many recently changed jobs stay unpacked (jobs.py)
and how many stale entries an index may hold before it is rebuilt
(state.py). Passed in; never read from the environment here."""

import msgspec

from leash.protocol import limits as L

DAY_MS = 24 * 3600 * 1000
MINUTE_MS = 60 * 1000
FAKTORY_PROCESS_TTL_DEFAULT_MS = MINUTE_MS  # Faktory forgets a worker after a minute without BEAT


class CoreConfig(msgspec.Struct, frozen=True):
    dead_max_jobs: int = 10_000
    dead_max_age_ms: int = 180 * DAY_MS
    retry_delay_max_ms: int = 180 * DAY_MS
    tick_max_items: int = 10_000  # jobs one timer record may touch
    heartbeat_ms: int = L.HEARTBEAT_DEFAULT_MS
    process_ttl_ms: int = L.PROCESS_TTL_DEFAULT_MS
    faktory_process_ttl_ms: int = FAKTORY_PROCESS_TTL_DEFAULT_MS  # of a Faktory consumer
    reconnect_grace_ms: int = L.RECONNECT_GRACE_DEFAULT_MS
    restart_grace_ms: int = L.RESTART_GRACE_DEFAULT_MS  # after a restart, to come back
    terminate_grace_ms: int = L.TERMINATE_GRACE_DEFAULT_MS
    batch_open_timeout_ms: int = 30 * MINUTE_MS  # an open batch not committed by then is abandoned
    batch_finished_retention_ms: int = DAY_MS  # a finished (or abandoned) batch is kept this long
    batch_unfinished_retention_ms: int = 30 * DAY_MS  # and an unfinished one this long
    lost_leases_max: int = L.LOST_LEASES_MAX_DEFAULT  # leases lost in a row: then the job is dead
    recent_jobs: int = 1024  # jobs that stay Job objects after their last change (jobs.py)
    # An index is rebuilt without its stale entries once it holds more than
    # twice its live ones plus this many (state.py)
    index_slack_entries: int = 64
    unique_keys_max: int = 1_000_000  # uniqueness keys held at once (unique.py)
    # A schedule's tick found later than this was passed over by a jump of
    # the clock (a machine asleep): it counts as missed (cron.py)
    schedule_late_max_ms: int = MINUTE_MS
    history_max_jobs: int = 10_000  # finished jobs kept for get_job (history.py); 0: none
    history_max_age_ms: int = DAY_MS  # and for at most this long
    result_max_bytes: int = L.RESULT_MAX_BYTES_DEFAULT  # one result (results.py); larger: refused
    results_max_bytes: int = 64 * 1024 * 1024  # all results kept; past it the nearest their end go
