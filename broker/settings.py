"""Every setting of ``leash serve``, in one table: ``SETTINGS``.

A setting is a flag (``--max-connections``), a ``LEASH_*`` environment
variable (``LEASH_MAX_CONNECTIONS``) and a key of the ``--config`` TOML file
(``max-connections``), all three made from its row. The row also says where
its value goes in ``ServerConfig`` (``field``), its type and bounds, its
default and its help. The argparse parser (broker/cli.py), the readers of the
file and the environment (broker/sources.py) and the table in
docs/configuration.md (docs/gen_settings.py) are all made from this table,
so a new flag is a new row here and, when the broker needs it, a field of
``ServerConfig``.

Numbers are whole and bounded: a value outside ``low``..``high`` is refused
with the range, never clamped.
"""

from collections.abc import Callable
from dataclasses import dataclass

from leash.broker.core.config import CoreConfig
from leash.broker.errors import BrokerError
from leash.broker.journal.compaction import DEFAULT_SNAPSHOT_MIN_BYTES
from leash.broker.journal.group_commit import FsyncPolicy
from leash.broker.journal.log import DEFAULT_SEGMENT_BYTES
from leash.broker.server.config import DEFAULT_PORT
from leash.broker.server.limits import Limits
from leash.protocol.limits import (
    FRAME_CEILING_BYTES,
    FRAME_MAX_BYTES,
    HANDSHAKE_FRAME_MAX_BYTES,
    HEARTBEAT_MAX_MS,
    HEARTBEAT_MIN_MS,
    IDLE_TIMEOUT_HEARTBEATS,
)

ENV_PREFIX = "LEASH_"
_CORE = CoreConfig()
_LIMITS = Limits()
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
RETENTION_MAX_MS = 10 * 365 * DAY_MS  # ten years
TIMEOUT_MIN_MS = 50
SEGMENT_MIN_BYTES = 1024
SIZE_MAX_BYTES = 1 << 50
PORT_MAX = 65535
UID_MAX = 2**32 - 1
DEAD_JOBS_MAX = 100_000_000
UNIQUE_KEYS_MAX = 100_000_000
RESULT_BYTES_MAX = 16 * 1024 * 1024  # a frame's ceiling
RESULTS_BYTES_MAX = 1 << 40
COUNT_MAX = 1_000_000
LOST_LEASES_MAX = 1000
LOG_LEVELS = ("debug", "info", "warning")
LOG_FORMATS = ("text", "json")


class SettingError(BrokerError, ValueError):
    """A value a setting does not take; the message says what it takes."""


@dataclass(frozen=True)
class Setting:
    flag: str  # "--max-connections"
    help: str
    default: object  # in the setting's own unit; None: not set
    field: str = ""  # "port", "core.heartbeat_ms", "limits.max_connections"; "": not ServerConfig's
    type: type = str  # int, str or bool (a switch)
    low: int | None = None  # inclusive bounds of an int
    high: int | None = None
    choices: tuple[str, ...] = ()
    many: bool = False  # repeatable flag; a list in the file; comma-separated in the environment
    scale: int = 1  # the ServerConfig field is the value times this (seconds to ms)
    zero_off: bool = False  # 0 is allowed below ``low``: it turns the thing off
    convert: Callable[[str], object] | None = None  # a str setting's parser
    group: str = "broker"
    metavar: str = ""

    @property
    def name(self) -> str:
        """The file key: the flag without its dashes."""
        return self.flag.removeprefix("--")

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()

    def parse(self, text: str) -> object:
        """One value from text (a flag's or a variable's), checked."""
        if self.type is int:
            try:
                number = int(text.strip())
            except ValueError:
                raise SettingError(f"expected a whole number, not {text!r}") from None
            return self.check(number)
        if self.type is bool:
            return parse_switch(text)
        return self.check(text)

    def check(self, value: object) -> object:
        """A value of the right type, within bounds; converted where the setting converts."""
        if self.type is int:
            assert isinstance(value, int)
            if self.zero_off and value == 0:
                return 0
            if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high
            ):
                raise SettingError(f"must be {self.range_text()}, not {value}")
            return value
        if self.choices and value not in self.choices:
            raise SettingError(f"must be one of {', '.join(self.choices)}, not {value!r}")
        if self.convert is not None:
            assert isinstance(value, str)
            try:
                return self.convert(value)
            except ValueError as error:
                raise SettingError(str(error)) from None
        return value

    def range_text(self) -> str:
        text = f"between {self.low} and {self.high}"
        return f"0 or {text}" if self.zero_off else text


def parse_switch(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"expected true or false (1/0, yes/no, on/off), not {text!r}")


def _int(
    flag: str,
    default: int | None,
    low: int,
    high: int,
    help: str,
    *,
    field: str,
    group: str = "broker",
    many: bool = False,
    scale: int = 1,
    zero_off: bool = False,
    metavar: str = "",
) -> Setting:
    units = {"-ms": "MS", "-bytes": "BYTES", "-s": "S", "-port": "PORT"}
    unit = next((name for end, name in units.items() if flag.endswith(end)), "N")
    metavar = metavar or unit
    return Setting(
        flag,
        help,
        default,
        field=field,
        type=int,
        low=low,
        high=high,
        many=many,
        scale=scale,
        zero_off=zero_off,
        group=group,
        metavar=metavar,
    )


def _limit(flag: str, low: int, high: int, help: str) -> Setting:
    dest = flag.removeprefix("--").replace("-", "_")
    default = getattr(_LIMITS, dest)
    return _int(flag, default, low, high, help, field=f"limits.{dest}", group="limits")


_BROKER = [
    Setting("--host", "address to bind", "127.0.0.1", field="host", metavar="ADDRESS"),
    _int(
        "--port",
        DEFAULT_PORT,
        0,
        PORT_MAX,
        "TCP port; 0 picks a free one",
        field="port",
        metavar="PORT",
    ),
    Setting(
        "--data-dir", "the journal's directory", "./leash-data", field="data_dir", metavar="DIR"
    ),
    Setting(
        "--fsync",
        "always: reply after fsync | interval:MS | never",
        "always",
        field="fsync",
        convert=FsyncPolicy.parse,
        metavar="POLICY",
    ),
    _int(
        "--max-frame-bytes",
        FRAME_MAX_BYTES,
        HANDSHAKE_FRAME_MAX_BYTES,
        FRAME_CEILING_BYTES,
        "largest request body",
        field="max_frame_bytes",
    ),
    _int(
        "--dead-max-jobs",
        _CORE.dead_max_jobs,
        1,
        DEAD_JOBS_MAX,
        "jobs kept in the dead set",
        field="core.dead_max_jobs",
    ),
    _int(
        "--dead-max-age-s",
        _CORE.dead_max_age_ms // 1000,
        1,
        RETENTION_MAX_MS // 1000,
        "seconds a dead job is kept",
        field="core.dead_max_age_ms",
        scale=1000,
    ),
    _int(
        "--unique-keys-max",
        _CORE.unique_keys_max,
        1,
        UNIQUE_KEYS_MAX,
        "uniqueness keys held at once (a push that would hold more is refused)",
        field="core.unique_keys_max",
    ),
    _int(
        "--history-max-jobs",
        _CORE.history_max_jobs,
        0,
        DEAD_JOBS_MAX,
        "finished jobs (acked, deleted, expired) kept for `leash job` (0: none)",
        field="core.history_max_jobs",
    ),
    _int(
        "--history-max-age-s",
        _CORE.history_max_age_ms // 1000,
        1,
        RETENTION_MAX_MS // 1000,
        "seconds a finished job is kept for `leash job`",
        field="core.history_max_age_ms",
        scale=1000,
    ),
    _int(
        "--result-max-bytes",
        _CORE.result_max_bytes,
        1,
        RESULT_BYTES_MAX,
        "the largest result an ack may carry (a larger one is refused: too_large)",
        field="core.result_max_bytes",
    ),
    _int(
        "--results-max-bytes",
        _CORE.results_max_bytes,
        1,
        RESULTS_BYTES_MAX,
        "results kept at once, in bytes (past it, those nearest their end are dropped)",
        field="core.results_max_bytes",
    ),
    _int(
        "--heartbeat-ms",
        _CORE.heartbeat_ms,
        HEARTBEAT_MIN_MS,
        HEARTBEAT_MAX_MS,
        "how often workers beat",
        field="core.heartbeat_ms",
    ),
    _int(
        "--process-ttl-ms",
        _CORE.process_ttl_ms,
        HEARTBEAT_MIN_MS,
        HOUR_MS,
        "a process with no sign of life for this long is dead (at least 2 heartbeats)",
        field="core.process_ttl_ms",
    ),
    _int(
        "--reconnect-grace-ms",
        _CORE.reconnect_grace_ms,
        0,
        HOUR_MS,
        "a process with no connection for this long is dead",
        field="core.reconnect_grace_ms",
    ),
    _int(
        "--restart-grace-ms",
        _CORE.restart_grace_ms,
        0,
        HOUR_MS,
        "after a restart, a process known from before (a Faktory consumer too) that is not "
        "back by then is dead and its leases are lost",
        field="core.restart_grace_ms",
    ),
    _int(
        "--lost-leases-max",
        _CORE.lost_leases_max,
        1,
        LOST_LEASES_MAX,
        "a job whose lease is lost (expired, its worker dead) this many times in a row is dead",
        field="core.lost_leases_max",
    ),
    _int(
        "--terminate-grace-ms",
        _CORE.terminate_grace_ms,
        0,
        HOUR_MS,
        "after terminate, the broker releases what is still leased",
        field="core.terminate_grace_ms",
    ),
    _int(
        "--batch-open-timeout-ms",
        _CORE.batch_open_timeout_ms,
        1,
        RETENTION_MAX_MS,
        "an open batch not committed by then is abandoned",
        field="core.batch_open_timeout_ms",
    ),
    _int(
        "--batch-retention-ms",
        _CORE.batch_finished_retention_ms,
        1,
        RETENTION_MAX_MS,
        "a finished or abandoned batch is kept this long",
        field="core.batch_finished_retention_ms",
    ),
    _int(
        "--batch-unfinished-retention-ms",
        _CORE.batch_unfinished_retention_ms,
        1,
        RETENTION_MAX_MS,
        "an unfinished batch is removed after this long",
        field="core.batch_unfinished_retention_ms",
    ),
]

_JOURNAL = [
    _int(
        "--segment-bytes",
        DEFAULT_SEGMENT_BYTES,
        SEGMENT_MIN_BYTES,
        SIZE_MAX_BYTES,
        "start a new journal segment past this size",
        field="segment_bytes",
        group="journal",
    ),
    _int(
        "--snapshot-min-bytes",
        DEFAULT_SNAPSHOT_MIN_BYTES,
        0,
        SIZE_MAX_BYTES,
        "snapshot when the journal since the last snapshot holds more than "
        "max(this, the last snapshot's size)",
        field="snapshot_min_bytes",
        group="journal",
    ),
    _int(
        "--disk-low-bytes",
        0,
        0,
        SIZE_MAX_BYTES,
        "refuse pushes with disk_full under this much free space (0: max(256 MiB, 4 segments))",
        field="disk_low_bytes",
        group="journal",
    ),
    Setting(
        "--repair-truncate",
        "cut a damaged journal at its first bad record, keeping the valid prefix "
        "(the rest is kept in .broken / .cut files and the loss logged)",
        False,
        field="repair_truncate",
        type=bool,
        group="journal",
    ),
]

_OPERATIONS = [
    Setting(
        "--admin-socket",
        "the admin socket's path (default DATA_DIR/admin.sock; at most 107 bytes)",
        "",
        field="admin_socket",
        metavar="PATH",
        group="operations",
    ),
    _int(
        "--admin-uid",
        None,
        0,
        UID_MAX,
        "a uid allowed on the admin socket besides the broker's own and root (repeatable)",
        field="admin_uids",
        many=True,
        group="operations",
        metavar="UID",
    ),
    _int(
        "--metrics-port",
        None,
        0,
        PORT_MAX,
        "serve Prometheus metrics over HTTP on this port (unset: off; 0 picks one)",
        field="metrics_port",
        group="operations",
    ),
    Setting(
        "--metrics-host",
        "address of the metrics port",
        "127.0.0.1",
        field="metrics_host",
        metavar="ADDRESS",
        group="operations",
    ),
    Setting(
        "--log-level",
        "the least severe log lines written",
        "info",
        choices=LOG_LEVELS,
        group="operations",
    ),
    Setting(
        "--log-format",
        "text lines, or one JSON object a line",
        "text",
        choices=LOG_FORMATS,
        group="operations",
    ),
]

_SECURITY = [
    Setting(
        "--key-file",
        "keys clients must prove they hold (TOML, mode 0600; leash keygen)",
        None,
        field="key_file",
        metavar="PATH",
        group="security",
    ),
    Setting(
        "--insecure-no-auth",
        "allow a non-loopback --host without --key-file (anyone who can connect is trusted)",
        False,
        field="insecure_no_auth",
        type=bool,
        group="security",
    ),
    Setting(
        "--tls-cert",
        "PEM certificate chain: speak TLS",
        None,
        field="tls_cert",
        metavar="PATH",
        group="security",
    ),
    Setting(
        "--tls-key",
        "PEM private key of --tls-cert",
        None,
        field="tls_key",
        metavar="PATH",
        group="security",
    ),
    Setting(
        "--tls-client-ca",
        "PEM CAs; clients must present a certificate",
        None,
        field="tls_client_ca",
        metavar="PATH",
        group="security",
    ),
]

_FAKTORY = [
    _int(
        "--faktory-port",
        None,
        0,
        PORT_MAX,
        "also speak Faktory's work protocol on this port of --host (unset: off; "
        "Faktory's own is 7419; 0 picks one)",
        field="faktory_port",
        group="faktory",
    ),
    Setting(
        "--faktory-password-file",
        "the password Faktory clients give (mode 0600); the keys of --key-file are "
        "passwords too (their secrets, in hex)",
        None,
        field="faktory_password_file",
        metavar="PATH",
        group="faktory",
    ),
    Setting(
        "--faktory-allow-mutate",
        "MUTATE and FLUSH for every Faktory client, not only for keys with role admin "
        "(the clients' own test suites FLUSH between tests)",
        False,
        field="faktory_allow_mutate",
        type=bool,
        group="faktory",
    ),
    _int(
        "--faktory-process-ttl-ms",
        _CORE.faktory_process_ttl_ms,
        HEARTBEAT_MIN_MS,
        HOUR_MS,
        "a Faktory consumer with no sign of life for this long is dead (they BEAT every 15 s)",
        field="core.faktory_process_ttl_ms",
        group="faktory",
    ),
]

_LIMIT_SETTINGS = [
    _limit("--max-connections", 1, COUNT_MAX, "open connections"),
    _limit("--max-unauthenticated", 1, COUNT_MAX, "connections not yet through the handshake"),
    _limit(
        "--max-unauthenticated-per-address",
        1,
        COUNT_MAX,
        "of those, from one address (an IPv6 /64)",
    ),
    _limit("--handshake-timeout-ms", TIMEOUT_MIN_MS, HOUR_MS, "from connect to welcome"),
    _limit("--tls-handshake-timeout-ms", TIMEOUT_MIN_MS, HOUR_MS, "the TLS handshake"),
    _limit("--frame-timeout-ms", TIMEOUT_MIN_MS, HOUR_MS, "a frame, once begun, to complete"),
    _int(
        "--idle-timeout-ms",
        None,
        TIMEOUT_MIN_MS,
        DAY_MS,
        f"close a connection with no frame this long; 0 never "
        f"(unset: {IDLE_TIMEOUT_HEARTBEATS} x --heartbeat-ms)",
        field="limits.idle_timeout_ms",
        zero_off=True,
        group="limits",
    ),
    _limit("--max-in-flight", 1, COUNT_MAX, "requests read and not answered, then stop reading"),
    _limit("--max-outbound-bytes", 64 * 1024, 1 << 30, "replies waiting to be read"),
    _limit("--write-stall-ms", TIMEOUT_MIN_MS, HOUR_MS, "replies not draining, then abort"),
    _limit("--max-args-bytes", 1, FRAME_CEILING_BYTES, "msgpack bytes of one job's args"),
    _limit(
        "--auth-fail-delay-ms",
        0,
        60_000,
        "after a failed authentication, before that source's next attempt is checked",
    ),
]

SETTINGS: tuple[Setting, ...] = (
    *_BROKER,
    *_JOURNAL,
    *_OPERATIONS,
    *_SECURITY,
    *_FAKTORY,
    *_LIMIT_SETTINGS,
)
BY_NAME = {setting.name: setting for setting in SETTINGS}
GROUPS = {
    "broker": "the broker",
    "journal": "the journal",
    "operations": "operations",
    "security": "security (see docs/security.md)",
    "faktory": "Faktory's work protocol (see docs/faktory.md)",
    "limits": "limits per connection (see docs/protocol.md §10.1)",
}
assert len(BY_NAME) == len(SETTINGS), "two settings with one name"
assert {setting.group for setting in SETTINGS} <= set(GROUPS)
