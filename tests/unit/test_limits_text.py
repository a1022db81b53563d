"""A queue's limits as text, written once (client/_admin_format.py) for
``leash limit`` and ``leash queues`` and for the dashboard
(tests/web/test_parts.py), each naming the rate's interval its own way."""

from leash.client._admin_format import limits_text, limits_use_text, per_duration
from leash.protocol import admin as A


def test_limits_as_set_name_each_limit_given_and_say_when_there_is_none() -> None:
    assert limits_text(20, 1, 600, 60_000, per_duration) == "20 at once, 1 per key, 600 per 60.0 s"
    assert limits_text(0, 2, 0, 0, per_duration) == "2 per key"
    assert limits_text(0, 0, 7, 90_000, lambda ms: f"every {ms} ms") == "7 every 90000 ms"
    assert limits_text(0, 0, 0, 0, per_duration) == "no limits"


def test_limits_in_use_show_each_limit_beside_its_use() -> None:
    queue = A.QueueView("sync", 0, 0, 3, 0, False, 0, concurrency_limit=20, per_key_limit=1,
                        rate_limit=600, rate_interval_ms=60_000, rate_used=412, keys_leased=5,
                        keys_saturated=2)  # fmt: skip
    assert limits_use_text(queue, per_duration) == (
        "3/20 running, 1 per key (2 of 5 keys full), 412/600 per 60.0 s"
    )
    assert limits_use_text(A.QueueView("free", 1, 0, 0, 0, False, 0), per_duration) == ""
