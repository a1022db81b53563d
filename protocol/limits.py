"""Every size, count and duration the protocol bounds, with its unit last.

Bounds on message fields are enforced when a frame is decoded (msgspec
``Meta`` constraints in protocol.messages); the frame limit is enforced by the
frame decoder before a body is buffered.
"""

FRAME_HEADER_BYTES = 4
FRAME_MAX_BYTES = 1024 * 1024  # default limit for a frame body after the handshake
FRAME_CEILING_BYTES = 16 * 1024 * 1024  # the largest frame limit a broker may be configured with
HANDSHAKE_FRAME_MAX_BYTES = 4 * 1024  # the hello frame

NAME_MAX_CHARS = 128  # queue names, worker ids
TYPE_MAX_CHARS = 256  # job type (handler name)
JOB_ID_MAX_CHARS = 128
NAME_PATTERN = r"^[A-Za-z0-9_.:-]+\Z"  # queue names and client-chosen job ids
SERVER_ID_PREFIX = "_"  # ids made by the broker start with it; client ids may not
CLIENT_ID_PATTERN = r"^[A-Za-z0-9.:-][A-Za-z0-9_.:-]*\Z"

PRIORITY_MIN = 0
PRIORITY_MAX = 9  # the most urgent
PRIORITY_DEFAULT = 5

MAX_ATTEMPTS_MIN = 1
MAX_ATTEMPTS_MAX = 1000
MAX_ATTEMPTS_DEFAULT = 25

LEASE_TTL_MIN_MS = 1_000
LEASE_TTL_MAX_MS = 24 * 3600 * 1000
LEASE_TTL_DEFAULT_MS = 1800 * 1000

RETRY_BASE_MIN_MS = 1
RETRY_BASE_MAX_MS = 24 * 3600 * 1000
SCHEDULE_HORIZON_MS = 5 * 365 * 24 * 3600 * 1000  # run_at / delay at most ~5 years ahead
UNIQUE_KEY_MAX_CHARS = 256  # a push's uniqueness key
UNIQUE_FOR_MAX_MS = 30 * 24 * 3600 * 1000  # a key stays taken at most this long after success
TIME_LIMIT_MIN_MS = 100  # a job's time limit: the longest one attempt may run
TIME_LIMIT_MAX_MS = 7 * 24 * 3600 * 1000
PROGRESS_MESSAGE_MAX_CHARS = 200  # a progress report's message
CONCURRENCY_KEY_MAX_CHARS = 256  # a push's concurrency key (a customer id, say)
CONCURRENCY_LIMIT_MAX = 1_000_000  # jobs of a queue (or of one key) leased at once
RATE_LIMIT_MAX = 100_000  # jobs a queue may start in one interval (each start is kept)
RATE_INTERVAL_MAX_MS = 24 * 3600 * 1000  # a rate limit's interval
KEEP_RESULT_MAX_MS = 30 * 24 * 3600 * 1000  # a job's result is kept at most this long
RESULT_MAX_BYTES_DEFAULT = 64 * 1024  # a result larger than this is refused (broker setting)
RESULT_WAIT_MAX_MS = 20_000  # a get_result waits at most this long for its job to finish
TIME_MAX_MS = 2**53  # absolute times are unix milliseconds below this

FETCH_COUNT_MAX = 1000
FETCH_QUEUES_MAX = 64
FETCH_WAIT_MAX_MS = 20_000
FETCH_REPLY_ARGS_MAX_BYTES = 8 * 1024 * 1024  # a fetch stops adding jobs past this (at least one)
PUSH_MANY_MAX = 1000
BEAT_TYPES_MAX = 200  # job types a beat reports the runs of
ACK_MANY_MAX = 1000
ADMIN_PAGE_DEFAULT = 50  # jobs in one page of an admin listing
ADMIN_PAGE_MAX = 1000
ADMIN_SCAN_MAX = 2_000  # index entries one admin request may look at (a few ms of work)
REQUEUE_MANY_MAX = 10_000  # jobs one requeue_jobs request requeues
BULK_MAX = 10_000  # jobs one delete_jobs or kill_jobs request changes
HISTORY_MAX_S = 3_600  # seconds of totals the broker keeps for graphs (one slot a second)
EXPIRED_JOBS_KEPT = 100  # jobs removed at their expiry that stats lists (the last ones)

# A job keeps its last ATTEMPTS_KEPT attempts (when, by whom, how each ended),
# each error cut to these sizes (the backtrace keeps its end); the job's
# last_error keeps the whole of the latest.
ATTEMPTS_KEPT = 10
ATTEMPT_MESSAGE_MAX_CHARS = 512
ATTEMPT_BACKTRACE_MAX_CHARS = 2048

ARGS_DEPTH_MAX = 64  # arrays and maps nested in one job's args ([] is one level)
ERROR_TEXT_MAX_CHARS = 512  # an error reply's message and path: longer ones are cut
ERROR_TYPE_MAX_CHARS = 256
ERROR_MESSAGE_MAX_CHARS = 8 * 1024
ERROR_BACKTRACE_MAX_CHARS = 64 * 1024

HOSTNAME_MAX_CHARS = 255
LABELS_MAX = 32
CLIENT_NAME_MAX_CHARS = 128

HEARTBEAT_DEFAULT_MS = 5_000  # how often a worker process beats
HEARTBEAT_MIN_MS, HEARTBEAT_MAX_MS = 100, 60_000
PROCESS_TTL_DEFAULT_MS = 15_000  # no sign of life for this long: the process is dead
RECONNECT_GRACE_DEFAULT_MS = 2_000  # all connections gone for this long: the process is dead
# After a broker restart, a process known from before that has not come back
# within this is dead. Clients retry a lost connection at least every
# RESTART_GRACE_DEFAULT_MS / 3, so a live one is back in time.
RESTART_GRACE_DEFAULT_MS = 3_000
LOST_LEASES_MAX_DEFAULT = 3  # a job whose lease is lost this many times in a row is dead
TERMINATE_GRACE_DEFAULT_MS = 25_000  # after terminate, the broker releases what is still leased

BATCH_ID_MAX_CHARS = 64  # so that callback job ids ("_cb:" id ":" serial ":" kind) fit in 128
BATCH_DESCRIPTION_MAX_CHARS = 1024
BATCH_DEPTH_MAX = 16  # a batch and its ancestors: at most this many levels
BATCH_STATUS_MEMBERS_MAX = 1000  # unfinished members (and children) listed by one status reply
BATCH_STATUS_MEMBERS_DEFAULT = 100
FSCK_PROBLEMS_MAX = 1000  # problems listed by one fsck reply
# --- schedules (docs/protocol.md §7.4) ---------------------------------------
SCHEDULES_MAX = 1000  # registered at once
SCHEDULE_NAME_MAX_CHARS = 64  # so that a tick's job id ("_sch:" name ":" tick_ms) fits in 128
SCHEDULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z"
CRON_EXPRESSION_MAX_CHARS = 128
TIME_ZONE_MAX_CHARS = 64
SCHEDULE_INTERVAL_MIN_MS = 1000
SCHEDULE_INTERVAL_MAX_MS = 366 * 24 * 3600 * 1000
# --- authentication (docs/protocol.md §4.5) ----------------------------------
KEY_ID_MAX_CHARS = 64
KEY_SECRET_MIN_BYTES = 32  # keys are random, never passwords
AUTH_NONCE_BYTES = 32  # what the reference client and broker send
AUTH_NONCE_MIN_BYTES, AUTH_NONCE_MAX_BYTES = 16, 64
AUTH_PROOF_BYTES = 32  # an HMAC-SHA256 digest

# --- what the broker allows a connection (defaults; each is a serve flag, §10.1) ---
CONNECTIONS_MAX_DEFAULT = 10_000
UNAUTHENTICATED_MAX_DEFAULT = 256  # connections that have not finished the handshake
UNAUTHENTICATED_PER_ADDRESS_MAX_DEFAULT = 64  # of those, from one address (an IPv6 /64)
HANDSHAKE_TIMEOUT_DEFAULT_MS = 2_000  # from connect (or the end of TLS) to welcome
TLS_HANDSHAKE_TIMEOUT_DEFAULT_MS = 5_000
FRAME_TIMEOUT_DEFAULT_MS = 30_000  # a frame must be complete this long after it began
IDLE_TIMEOUT_HEARTBEATS = 3  # idle timeout by default: this many heartbeat_ms
IN_FLIGHT_MAX_DEFAULT = 1_024  # requests read and not yet answered, per connection
OUTBOUND_MAX_BYTES_DEFAULT = 8 * 1024 * 1024  # replies queued for a connection
WRITE_STALL_DEFAULT_MS = 10_000  # replies not draining for this long
ARGS_MAX_BYTES_DEFAULT = 1024 * 1024  # the msgpack bytes of one job's args
AUTH_FAIL_DELAY_DEFAULT_MS = 1_000  # before auth_failed; doubled per recent failure
AUTH_FAIL_DELAY_STEPS = 4  # at most 2**this times the delay
