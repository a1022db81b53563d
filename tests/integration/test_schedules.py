"""Schedules on a real broker: from its config file and from the ``leash``
command, their jobs named for their ticks, and what a restart does with
the config's and the operator's schedules."""

import json
import re
import time
from pathlib import Path

import pytest

from leash.broker.sources import ConfigError, read_schedules
from leash.client import Client
from tests.integration.broker_proc import BrokerProcess
from tests.integration.test_admin import metrics_port, scrape
from tests.integration.test_cli_tool import leash

TICK_BOUND_S = 10.0  # a 1 s tick's job reaches a worker within this, however loaded the machine

CONFIG = """
[schedules.beat]
every-ms = 1000
queue = "ticks"
type = "beat"
args = {n = 1}

[schedules.nightly]
cron = "30 2 * * *"
tz = "Europe/Berlin"
type = "report"
missed = "last"
"""


def schedules(data_dir: str) -> dict[str, dict[str, object]]:
    done = leash("schedules", "--json", "--data-dir", data_dir)
    assert done.returncode == 0, done.stderr
    return {s["name"]: s for s in json.loads(done.stdout)}


def test_config_and_command_line_schedules_push_tick_named_jobs_and_survive_restarts(
    tmp_path: Path,
) -> None:
    config = tmp_path / "leash.toml"
    config.write_text(CONFIG)
    data = str(tmp_path / "data")
    broker = BrokerProcess(data, ["--config", str(config), "--metrics-port", "0"]).start()
    try:
        listed = schedules(data)
        assert sorted(listed) == ["beat", "nightly"]
        assert listed["beat"]["from_config"] and listed["beat"]["every_ms"] == 1000
        assert listed["nightly"]["tz"] == "Europe/Berlin" and listed["nightly"]["missed"] == "last"
        added = leash(
            "schedule", "add", "mine", "--cron", "*/5 * * * *", "--tz", "America/New_York",
            "--queue", "q", "--type", "t", "--args", '["x"]', "--data-dir", data,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        with Client("127.0.0.1", broker.port, timeout_s=10.0) as client:
            deadline = time.monotonic() + TICK_BOUND_S
            jobs = []
            while not jobs and time.monotonic() < deadline:
                jobs = client.fetch_many("ticks", 1, wait_ms=1000)
            (job,) = jobs
            assert job.id.startswith("_sch:beat:") and job.type == "beat"
            assert job.args == {"n": 1}
            client.ack(job)
        with broker.admin() as admin:
            for name in ("beat", "mine", "nightly"):  # so that no tick moves what is compared
                admin.pause_schedule(name)
            samples = scrape(metrics_port(broker))
            views = {s.name: s for s in admin.schedules()}
            assert admin.stats().schedules == 3 and views["beat"].fires >= 1
            for name in ("beat", "mine", "nightly"):
                admin.resume_schedule(name)
        for name, view in views.items():
            assert samples[f'leash_schedule_fires_total{{schedule="{name}"}}'] == view.fires
            assert samples[
                f'leash_schedule_next_tick_seconds{{schedule="{name}"}}'
            ] == pytest.approx(view.next_ms / 1000)
        stats = leash("stats", "--data-dir", data).stdout
        assert re.search(r"^schedules:\s+3$", stats, flags=re.MULTILINE), stats
        table = leash("schedules", "--data-dir", data)
        assert "beat" in table.stdout and "every 1.0 s" in table.stdout, table.stdout
        for verb in ("pause", "resume"):
            done = leash("schedule", verb, "nightly", "--data-dir", data)
            assert done.returncode == 0 and verb in done.stdout, done.stderr
        bad = leash(
            "schedule", "add", "bad", "--cron", "61 * * * *", "--type", "t", "--data-dir", data
        )
        assert bad.returncode == 1 and "cron expression" in bad.stderr, bad.stderr
        gone = leash("schedule", "rm", "nope", "--data-dir", data)
        assert gone.returncode == 3 and "no schedule 'nope'" in gone.stderr, gone.stderr
    finally:
        broker.stop()
    config.write_text(CONFIG.split("[schedules.nightly]")[0])  # nightly left the file
    broker = BrokerProcess(data, ["--config", str(config)]).start()
    try:
        listed = schedules(data)
        assert sorted(listed) == ["beat", "mine"]  # nightly left the file; mine stays
        assert listed["beat"]["fires"] >= 1 and not listed["mine"].get("from_config")
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('[schedules.x]\ncron = "61 * * * *"\ntype = "t"\n', "schedules.x: cron expression"),
        ('[schedules.x]\nevery-ms = 10\ntype = "t"\n', "schedules.x: Expected `int` >= 1000"),
        ('[schedules.x]\nevery-ms = 1000\ntype = "t"\ncolor = 1\n', "unknown key 'color'"),
        ('[schedules.x]\ncron = "* * * * *"\ntz = "Nowhere/X"\ntype = "t"\n', "no time zone"),
        ('[schedules.x]\ncron = "* * * * *"\n', "schedules.x: Object missing required field"),
    ],
)
def test_a_bad_schedule_table_stops_the_start_naming_it(
    tmp_path: Path, table: str, says: str
) -> None:
    config = tmp_path / "leash.toml"
    config.write_text(table)
    with pytest.raises(ConfigError) as caught:
        read_schedules(str(config))
    assert str(config) in str(caught.value) and says in str(caught.value), caught.value


def test_the_configuration_docs_schedule_example_reads_as_two_schedules(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    text = doc.split("### Schedules", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "leash.toml"
    config.write_text(text)
    nightly, heartbeat = sorted(read_schedules(str(config)), key=lambda r: r.name, reverse=True)
    assert (nightly.name, nightly.cron, nightly.tz, nightly.missed) == (
        "nightly-report",
        "30 2 * * *",
        "Europe/Berlin",
        "last",
    )
    assert (heartbeat.name, heartbeat.every_ms, heartbeat.job.type) == ("heartbeat", 60000, "ping")
    assert nightly.from_config and nightly.job.queue == "cron"
