"""The dashboard in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) against a live broker with jobs in
every state. Every page is loaded and screenshotted into the test's output
folder; the buttons are clicked and the broker's state is checked through
its admin socket; a job whose args hold a script renders as text and runs
nothing. Without Chromium (``apt-get install chromium chromium-driver``)
these tests are skipped, saying so, unless ``LEASH_REQUIRE_BROWSER`` is set:
.ci/run installs them and sets it, so in CI they always run.

``LEASH_DASHBOARD_PNG=docs/dashboard.png`` also writes the overview's
screenshot there (``make screenshot``: the README's picture).
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from leash import Client
from leash.client import AdminClient
from tests.web.conftest import Dashboard
from tests.web.scene import BROKER_ARGS, MARKUP, Scene, populate

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MISSING = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
WHY = f"no {' or '.join(MISSING)}: apt-get install chromium chromium-driver"
REQUIRED = bool(os.environ.get("LEASH_REQUIRE_BROWSER"))  # .ci/run sets it: there they run
pytestmark = pytest.mark.skipif(bool(MISSING) and not REQUIRED, reason=WHY)
WAIT_S = 15.0
PAGE_LOAD_S = 30.0
DESKTOP, PHONE = (1280, 900), (390, 844)

if not MISSING:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(autouse=True)
def _chromium_required() -> None:
    if MISSING:
        pytest.fail(f"the browser tests must run here (LEASH_REQUIRE_BROWSER): {WHY}")


@pytest.fixture
def browser() -> Iterator["WebDriver"]:
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_S)
    yield driver
    driver.quit()


@pytest.fixture
def live(start_dashboard: Callable[..., Dashboard]) -> Iterator[tuple[Dashboard, Scene]]:
    dashboard = start_dashboard(["--refresh-s", "1"], broker_args=BROKER_ARGS)
    scene = populate(dashboard)
    yield dashboard, scene
    scene.holder.close()


def problems_in_console(driver: "WebDriver") -> list[str]:
    """What the page's console says went wrong (a blocked script, a failed load)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(driver: "WebDriver", condition: Callable[[Any], Any]) -> Any:
    return WebDriverWait(driver, WAIT_S).until(condition)


def flash(driver: "WebDriver") -> str:
    element = wait_for(
        driver, expected_conditions.presence_of_element_located((By.CLASS_NAME, "flash"))
    )
    return str(element.text)


def click(driver: "WebDriver", selector: str, *, confirm: bool = False) -> None:
    """Click a form's button (accepting its confirm dialog) and wait for the
    page the form leads to."""
    driver.execute_script("window.__leash_left = false")  # a new page has no such mark
    driver.find_element(By.CSS_SELECTOR, selector).click()
    if confirm:
        wait_for(driver, expected_conditions.alert_is_present())
        driver.switch_to.alert.accept()
    wait_for(driver, new_page_loaded)


def new_page_loaded(driver: "WebDriver") -> bool:
    try:
        return bool(
            driver.execute_script(
                "return window.__leash_left === undefined && document.readyState === 'complete'"
            )
        )
    except WebDriverException:  # asked while the browser swaps the pages
        return False


PAGES = [
    ("overview", "/", "Overview"),
    ("queues", "/queues", "Queues"),
    ("ready", "/jobs/ready", "Ready jobs"),
    ("leased", "/jobs/leased", "Leased jobs"),
    ("scheduled", "/jobs/scheduled", "Scheduled jobs"),
    ("retrying", "/jobs/retrying", "Retrying jobs"),
    ("dead", "/jobs/dead", "Dead jobs"),
    ("job-dead", "/job/doomed-1", "Job doomed-1"),
    ("busy", "/busy", "Busy"),
    ("processes", "/processes", "Processes"),
    ("batches", "/batches", "Batches"),
    ("batch", "/batch/album-42", "Batch album-42"),
    ("schedules", "/schedules", "Schedules"),
]


def test_every_page_loads_with_jobs_in_every_state_and_is_screenshotted(
    live: tuple[Dashboard, Scene], browser: "WebDriver", tmp_path: Path
) -> None:
    dashboard, scene = live
    expected_text = {
        "leased": scene.leased, "scheduled": scene.scheduled, "retrying": scene.retrying,
        "dead": scene.dead, "busy": scene.leased, "processes": scene.worker_id,
        "batches": scene.batch, "ready": "mail-1", "job-dead": f"bad row in {scene.dead}",
    }  # fmt: skip
    for name, path, heading in PAGES:
        browser.get(dashboard.url + path)
        assert browser.find_element(By.TAG_NAME, "h1").text.startswith(heading), name
        if name in expected_text:
            assert expected_text[name] in browser.find_element(By.ID, "live").text, name
        browser.save_screenshot(str(tmp_path / f"{name}.png"))
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert problems_in_console(browser) == []
    browser.get(dashboard.url + "/")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline.series-acked")
    target = os.environ.get("LEASH_DASHBOARD_PNG")
    if target:
        browser.save_screenshot(target)
    print(f"screenshots in {tmp_path}")


def test_a_running_jobs_progress_and_limit_and_a_waiting_jobs_key_and_expiry_show(
    live: tuple[Dashboard, Scene], browser: "WebDriver"
) -> None:
    dashboard, scene = live
    browser.get(dashboard.url + f"/job/{scene.leased}")
    bar = browser.find_element(By.CSS_SELECTOR, "dd.job-progress progress")
    assert bar.get_attribute("value") == "40" and bar.is_displayed()
    assert "4 of 10 files" in browser.find_element(By.CSS_SELECTOR, "dd.job-progress").text
    assert browser.find_element(By.CSS_SELECTOR, "dd.time-limit").text.startswith("60 min 0 s")
    browser.get(dashboard.url + "/busy")
    cell = browser.find_element(By.CSS_SELECTOR, "td.busy-progress")
    assert cell.text.startswith("40%") and "4 of 10 files" in cell.text
    browser.get(dashboard.url + f"/job/{scene.ready}")
    assert browser.find_element(By.CSS_SELECTOR, "dd.unique-key").text.startswith("mail:ada")
    assert "unless started before" in browser.find_element(By.CSS_SELECTOR, "dd.expires").text
    browser.get(dashboard.url + "/jobs/ready?queue=mail")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-job='{scene.ready}']")
    assert "key mail:ada" in row.text and "expires in" in row.text
    assert problems_in_console(browser) == []


def test_a_job_whose_args_hold_a_script_renders_as_text_and_runs_nothing(
    live: tuple[Dashboard, Scene], browser: "WebDriver"
) -> None:
    dashboard, scene = live
    for path in (f"/job/{scene.markup}", "/jobs/ready?queue=mail"):
        browser.get(dashboard.url + path)
        assert browser.execute_script("return window.__leash_pwned === undefined") is True
        assert browser.find_elements(By.CSS_SELECTOR, "#live img") == []
        assert browser.find_elements(By.CSS_SELECTOR, "#live script") == []
    args = browser.find_element(By.CSS_SELECTOR, f"tr[data-job='{scene.markup}'] code.args").text
    assert "<script>window.__leash_pwned = 1</script>" in args
    browser.get(dashboard.url + f"/job/{scene.markup}")
    shown = browser.find_element(By.CSS_SELECTOR, "pre.args").text
    assert MARKUP.replace('"', '\\"') in shown


def test_the_buttons_change_the_broker(live: tuple[Dashboard, Scene], browser: "WebDriver") -> None:
    dashboard, scene = live
    with dashboard.admin() as admin:
        click_every_button(dashboard, scene, browser, admin)


def click_every_button(
    dashboard: Dashboard, scene: Scene, browser: "WebDriver", admin: AdminClient
) -> None:

    def paused(name: str) -> bool:
        return {q.name: q.paused for q in admin.queues()}[name]

    browser.get(dashboard.url + "/queues")
    click(browser, "tr[data-queue='mail'] button.pause")
    assert flash(browser) == "mail: paused" and paused("mail")
    click(browser, "tr[data-queue='mail'] button.resume")
    assert flash(browser) == "mail: resumed" and not paused("mail")
    click(browser, "tr[data-queue='mail'] button.purge", confirm=True)
    assert flash(browser) == "mail: purged 3 jobs"
    assert "mail" not in {q.name for q in admin.queues()}

    browser.get(dashboard.url + f"/job/{scene.dead}")
    click(browser, "button.retry")
    assert flash(browser) == f"{scene.dead}: requeued"
    assert admin.job(scene.dead).state == "ready"

    browser.get(dashboard.url + f"/job/{scene.scheduled}")
    click(browser, "button.delete", confirm=True)
    assert flash(browser) == f"{scene.scheduled}: deleted"
    assert admin.job(scene.scheduled).state == "deleted"  # in the finished-job history

    browser.get(dashboard.url + "/jobs/retrying")
    browser.find_element(By.CSS_SELECTOR, f"tr[data-job='{scene.retrying}'] input[name=id]").click()
    click(browser, "button.kill-selected", confirm=True)
    assert flash(browser) == "kill: 1 job"
    assert admin.job(scene.retrying).state == "dead"

    browser.get(dashboard.url + "/jobs/dead")
    click(browser, "button.retry-all", confirm=True)
    assert flash(browser) == "retry: 1 job"
    assert admin.job(scene.retrying).state == "ready"

    browser.get(dashboard.url + "/processes")
    click(browser, f"tr[data-worker='{scene.worker_id}'] button.quiet")
    assert flash(browser) == f"{scene.worker_id}: asked to quiet"
    assert admin.processes()[0].state == "quiet"
    click(browser, f"tr[data-worker='{scene.worker_id}'] button.unquiet")
    assert flash(browser) == f"{scene.worker_id}: asked to unquiet"
    assert admin.processes()[0].state == "ok"

    browser.get(dashboard.url + "/jobs/retrying")
    click(browser, "button.retry-selected")  # nothing selected: refused, nothing changed
    assert flash(browser).startswith("refused: select jobs first")
    assert problems_in_console(browser) == []


def test_pages_refresh_by_themselves_fit_a_phone_and_follow_dark_mode(
    live: tuple[Dashboard, Scene], browser: "WebDriver", tmp_path: Path
) -> None:
    dashboard, scene = live
    browser.get(dashboard.url + "/queues")
    scene.holder.push("t", queue="arrived-later")
    wait_for(browser, lambda driver: "arrived-later" in driver.find_element(By.ID, "live").text)

    browser.set_window_size(*PHONE)
    for name, path, _ in PAGES:
        browser.get(dashboard.url + path)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 1, (name, overflow)  # wide tables scroll inside their box
    browser.get(dashboard.url + "/")
    browser.save_screenshot(str(tmp_path / "overview-phone.png"))

    browser.set_window_size(*DESKTOP)
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    browser.get(dashboard.url + "/")
    background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    red, green, blue = (
        int(part) for part in background[background.index("(") + 1 : -1].split(",")[:3]
    )
    assert red + green + blue < 150, background
    browser.save_screenshot(str(tmp_path / "overview-dark.png"))


def fill(driver: "WebDriver", form: str, values: dict[str, str]) -> None:
    for name, value in values.items():
        field = driver.find_element(By.CSS_SELECTOR, f"{form} [name={name}]")
        if field.tag_name == "select":
            field.find_element(By.CSS_SELECTOR, f"option[value='{value}']").click()
        else:
            field.clear()
            field.send_keys(value)


def test_a_schedule_added_through_the_form_is_listed_then_paused(
    dashboard: Dashboard, browser: "WebDriver"
) -> None:
    browser.get(dashboard.url + "/schedules")
    browser.find_element(By.CSS_SELECTOR, "details.add-schedule summary").click()
    fill(browser, "details.add-schedule form", {
        "name": "nightly", "cron": "30 2 * * *", "tz": "Europe/Berlin", "queue": "reports",
        "type": "report", "args": '["eu"]', "missed": "last",
    })  # fmt: skip
    click(browser, "details.add-schedule button.add")
    assert flash(browser) == "schedule nightly added"
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-schedule='nightly']").text
    assert "30 2 * * * (Europe/Berlin)" in row and "reports" in row and '["eu"]' in row
    with dashboard.admin() as admin:
        (added,) = admin.schedules()
        assert (added.cron, added.tz, added.type, added.missed) == (
            "30 2 * * *", "Europe/Berlin", "report", "last"
        )  # fmt: skip
        assert not added.paused and added.next_ms > 0
        click(browser, "tr[data-schedule='nightly'] button.pause")
        assert flash(browser) == "schedule nightly: paused"
        assert admin.schedules()[0].paused
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-schedule='nightly']").text
    assert "paused" in row
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-schedule='nightly'] button.resume")
    assert problems_in_console(browser) == []


def test_a_queues_limits_set_through_its_form_show_on_the_queues_page(
    dashboard: Dashboard, browser: "WebDriver"
) -> None:
    with Client("127.0.0.1", dashboard.broker.port) as client:
        client.push("sync_account", ["acme"], queue="sync", concurrency_key="acme")
    browser.get(dashboard.url + "/queues")
    browser.find_element(
        By.CSS_SELECTOR, "tr[data-queue='sync'] details.limits-form summary"
    ).click()
    form = "tr[data-queue='sync'] details.limits-form form"
    fill(browser, form, {"concurrency": "20", "per_key": "1", "rate": "600"})
    click(browser, "tr[data-queue='sync'] button.set-limits")
    assert flash(browser) == "sync: 20 at once, 1 per key, 600 per min"
    with dashboard.admin() as admin:
        (queue,) = admin.queues()
        assert (queue.concurrency_limit, queue.per_key_limit, queue.rate_limit) == (20, 1, 600)
        assert queue.rate_interval_ms == 60_000
    shown = browser.find_element(By.CSS_SELECTOR, "tr[data-queue='sync'] td.limits").text
    assert shown == "0/20 running, 1 per key (0 of 0 keys full), 0/600 per min"
    assert problems_in_console(browser) == []
