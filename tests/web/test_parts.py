"""The dashboard's pure parts: the SVG graph, the checked input, how values
are shown, sessions and the password hash."""

import re
from pathlib import Path
from xml.etree import ElementTree

import msgspec
import pytest
from starlette.exceptions import HTTPException

from leash.protocol import admin as A
from leash.web import charts, filters, forms, serve, settings
from leash.web.context import local_path
from leash.web.credentials import Credentials, PasswordHash, hash_password
from leash.web.sessions import SESSIONS_MAX, Sessions, token_matches


def test_the_graph_is_well_formed_svg_with_a_line_per_series_scaled_to_a_round_top() -> None:
    svg = charts.line_chart(
        [charts.Series("acked", "processed", [0.0, 3.0, 7.0]), charts.Series("failed", "f", [1.0])],
        "60 s ago",
    )
    root = ElementTree.fromstring(svg)
    lines = root.findall("{http://www.w3.org/2000/svg}polyline") or root.findall("polyline")
    assert [line.get("class") for line in lines] == ["series-acked", "series-failed"]
    ys = [float(point.split(",")[1]) for point in lines[0].get("points", "").split()]
    assert ys[0] > ys[1] > ys[2], "higher values are higher up"
    assert "10" in [tick.text for tick in root.iter() if tick.get("class") == "tick"]
    assert "now 7.0/s, peak 7.0/s" in (root.get("aria-label") or "")


def test_the_graph_escapes_its_labels_and_buckets_average_a_second() -> None:
    svg = charts.line_chart([charts.Series("x", "<b>", [1.0])], "<script>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;" in svg
    assert charts.buckets([1, 2, 3, 4, 5], 2) == [1.5, 3.5, 5.0]


@pytest.mark.parametrize(
    ("values", "fields"),
    [
        ({}, {}),
        ({"queue": "mail", "type": "", "min_age_s": "1.5"}, {"queue": "mail", "min_age_ms": 1500}),
        ({"error": "Timeout", "max_age_s": "60"}, {"error": "Timeout", "max_age_ms": 60_000}),
    ],
)
def test_a_filter_is_read_from_text(values: dict[str, str], fields: dict[str, object]) -> None:
    assert forms.job_filter(values) == fields


@pytest.mark.parametrize(
    "values",
    [{"min_age_s": "-1"}, {"max_age_s": "nan"}, {"min_age_s": "x"}, {"queue": "a b"},
     {"type": "t" * 300}, {"max_age_s": "1e20"}],
)  # fmt: skip
def test_a_bad_filter_is_a_400_naming_what_is_wrong(values: dict[str, str]) -> None:
    with pytest.raises(HTTPException) as refused:
        forms.job_filter(values)
    assert refused.value.status_code == 400


def test_limits_ids_and_states_are_checked() -> None:
    assert forms.limit_of({}) == 50 and forms.limit_of({"limit": "50"}) == 50
    for bad in ("0", "51", "ten"):
        with pytest.raises(HTTPException):
            forms.limit_of({"limit": bad})
    with pytest.raises(HTTPException):
        forms.ids_of(["j"] * (forms.IDS_MAX + 1))
    with pytest.raises(HTTPException):
        forms.state_of("dead", forms.KILLABLE)
    assert forms.state_of("leased") == "leased"


def test_a_redirect_goes_back_only_to_a_path_of_this_server() -> None:
    assert local_path("/jobs/dead?queue=a", "/") == "/jobs/dead?queue=a"
    for elsewhere in ("https://evil.test/", "//evil.test/x", "/\\evil.test", None, "jobs"):
        assert local_path(elsewhere, "/") == "/"


def test_values_are_shown_for_people() -> None:
    assert filters.duration(950) == "950 ms" and filters.duration(90_000) == "90 s"
    assert filters.duration(3 * 3600_000 + 60_000) == "3 h 1 min"
    assert filters.size(1536) == "1.5 KiB" and filters.size(12) == "12 B"
    assert filters.when(1_767_225_600_000) == "2026-01-01 00:00:00Z"
    raw = msgspec.Raw(msgspec.msgpack.encode({"html": "<b>"}))
    assert filters.args_json(raw) == '{\n  "html": "<b>"\n}'
    assert filters.short("a\nb" + "c" * 100, 10) == "a bcccccc…"  # 10 characters
    assert filters.rate(0) == "0" and filters.rate(2.5) == "2.50/s"


def test_sessions_are_bounded_expire_and_sign_in_makes_a_new_one() -> None:
    sessions = Sessions()
    first = sessions.new(0)
    assert sessions.get(first.id, 1000) is first
    assert token_matches(first, first.csrf) and not token_matches(first, "x")
    assert not token_matches(first, None)
    signed = sessions.sign_in(first, 2000)
    assert signed.id != first.id and signed.csrf != first.csrf and signed.signed_in
    assert sessions.get(first.id, 2000) is None
    assert sessions.get(signed.id, 2000 + 13 * 3600_000) is None, "12 hours at most"
    for at in range(SESSIONS_MAX + 5):
        sessions.new(at)
    assert len(sessions) == SESSIONS_MAX


def test_a_password_hash_checks_the_password_and_nothing_else() -> None:
    line = hash_password("a long enough password", n=2**14)
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", line)
    checked = PasswordHash(line, "pw")
    assert checked.matches("a long enough password")
    assert not checked.matches("a long enough passwor") and not checked.matches("")
    assert hash_password("a long enough password", n=2**14) != line, "salted"
    credentials = Credentials(checked, [])
    assert credentials.required and not credentials.key_matches("k:00")
    assert not Credentials(None, []).required


@pytest.mark.parametrize("doc", ["web.md", "configuration.md"])
def test_every_leash_web_variable_is_documented_beside_its_flag(doc: str) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / doc).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `--")]
    for name, variable in serve.ENV.items():
        flag = "--" + name.replace("_", "-")
        assert any(f"`{flag}`" in row and f"`{variable}`" in row for row in rows), (flag, doc)


def test_a_queues_limits_read_from_a_form_or_json_and_shown_with_their_use() -> None:
    form = {"concurrency": "3", "per_key": "", "rate": "", "rate_interval_ms": "60000"}
    assert settings.limits_of("sync", form, is_form=True) == {
        "concurrency": 3, "per_key": 0, "rate": 0, "rate_interval_ms": 0,
    }  # fmt: skip
    with pytest.raises(HTTPException, match="rate and rate_interval_ms"):
        settings.limits_of("sync", {"rate_interval_ms": 60000}, is_form=False)
    assert filters.limits_text({"rate": 7, "rate_interval_ms": 90_000}) == "7 per 90 s"
    assert filters.limits_text({}) == "no limits"
    queue = A.QueueView("sync", 9, 0, 3, 0, False, 0, concurrency_limit=20, per_key_limit=1,
                        rate_limit=600, rate_interval_ms=60_000, rate_used=412, keys_leased=3,
                        keys_saturated=1)  # fmt: skip
    assert filters.queue_limits(queue) == (
        "3/20 running, 1 per key (1 of 3 keys full), 412/600 per min"
    )
    assert filters.queue_limits(A.QueueView("free", 1, 0, 0, 0, False, 0)) == ""
