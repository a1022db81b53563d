"""The broker's one exception root: every exception the broker defines
derives from ``BrokerError``, so ``except BrokerError`` catches whatever
the broker raises on purpose (and nothing it raises by mistake).

Where a caller catches one by a standard class (``ValueError``,
``OSError``, ``msgspec.DecodeError``), it derives from that class too. The
tree (tests/unit/test_broker_errors.py checks that no broker exception is
left out of it):

    BrokerError
    ├── Rejected               core/common.py: a request refused with its error code
    ├── ImageError             core/image.py (ValueError): chunks that are no image
    │   └── ImageTooNew          an image of a later version: not damage
    ├── BadHeader              journal/format.py: a segment's header does not read
    │   └── UnknownVersion       a format version this build does not read
    ├── Unreadable             journal/reading.py (msgspec.DecodeError): nested too deep
    ├── JournalCorrupt         journal/recovery.py: damage that is not a torn tail
    ├── JournalFailure         journal/log.py: a write, fsync or rotation failed
    ├── Locked                 journal/datadir.py: another broker holds the data directory
    ├── SnapshotCorrupt        journal/snapshot.py: a snapshot that fails its checks
    ├── SnapshotTooNew         journal/snapshot.py: a snapshot of a later version
    ├── NoRoom                 journal/snapshot.py (OSError): no space for a snapshot
    ├── SettingError           settings.py (ValueError): a value a setting does not take
    ├── ConfigError            sources.py: a setting that cannot be used, by its source
    ├── ScheduleConfigError    schedule_config.py (ValueError): a bad schedule table
    ├── PasswordFileError      server/faktory_auth.py (ValueError): a bad password file
    ├── SecurityError          server/security.py: keys, TLS or protected mode refuse the start
    ├── AdminSocketError       server/admin.py: the admin socket cannot be made
    └── StartupError           server/main.py: the broker cannot start as configured
"""


class BrokerError(Exception):
    """Something the broker raises on purpose; see the tree above."""
