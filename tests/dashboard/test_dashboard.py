"""The dashboard in a real browser against a real `sensorlake up`: what a user sees on each
page — devices and their live values, charts drawn from the rollups, anomalies and alerts, the
SQL console and its CSV, the key prompt, pipeline health — on a phone in dark mode too, and
with nothing fetched from anywhere but the server itself."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.conftest import Sensorlake
from tests.dashboard.conftest import Tab

pytestmark = pytest.mark.slow

DAY = 86_400
DETECTOR = """
[[detectors]]
name = "temperature-range"
topic = "farm/+/telemetry"
field = "temperature"
kind = "range"
min = 0
max = 50
for = 0
"""

Browse = Callable[..., Tab]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensorlake]:
    """One `sensorlake up` for the module, with a range detector on temperature (0 to 50). Its
    maintenance runs every 2 s, so that the table figures of the health page are current."""
    root = tmp_path_factory.mktemp("dashboard")
    config = root / "sensorlake.toml"
    config.write_text(DETECTOR)
    lake = Sensorlake(root / "data", flush_interval=0.5, args=("--config", str(config)),
                      SENSORLAKE_LAKE__MAINTENANCE_INTERVAL="2").start()
    yield lake
    if lake.proc is not None:
        lake.stop()


# ---------------------------------------------------------------------------------- helpers


def show(tab: Tab, lake: Sensorlake, route: str) -> Page:
    """Loads the dashboard at a hash route and waits until the page rendered."""
    tab.page.goto(f"{lake.url}/{route}")
    expect(tab.page.locator("body")).to_have_attribute("data-ready", "1")
    return tab.page


def device_card(page: Page, device: str) -> Locator:
    return page.locator(f'[data-testid="device-card"][data-device="{device}"]')


def card_value(page: Page, device: str, field: str) -> Locator:
    return device_card(page, device).locator(
        f'[data-testid="device-value"][data-field="{field}"]')


def publish(lake: Sensorlake, device: str, body: bytes) -> None:
    lake.mqtt_publish(f"farm/{device}/telemetry", [body])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def send(lake: Sensorlake, device: str, readings: list[dict[str, object]]) -> None:
    for at in range(0, len(readings), 500):
        response = lake.ingest(f"farm/{device}/telemetry", readings[at:at + 500])
        assert response.status_code == 200, response.text


def luminance(css_color: str) -> float:
    """Relative luminance (WCAG) of an rgb()/rgba() colour."""
    r, g, b = (int(v) for v in re.findall(r"\d+", css_color)[:3])

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


# ------------------------------------------------------------------------------------ tests


def test_the_overview_lists_a_device_published_over_mqtt_with_its_value_online(
        board: Sensorlake, browse: Browse, device: str) -> None:
    publish(board, device, b'{"temperature": 21.5}')
    page = show(browse(), board, "#/")
    card = device_card(page, device)
    expect(card).to_be_visible()
    expect(card_value(page, device, "temperature")).to_have_text("21.5")
    expect(card.get_by_test_id("device-status")).to_have_text("online")
    expect(card).to_have_attribute("data-online", "true")
    expect(card.get_by_test_id("device-topic")).to_have_text(f"farm/{device}/telemetry")
    expect(card.get_by_role("link", name=device)).to_have_attribute(
        "href", f"#/devices/{device}")


def test_a_live_value_changes_after_another_publish_without_a_reload(
        board: Sensorlake, browse: Browse, device: str) -> None:
    publish(board, device, b'{"temperature": 21.5}')
    page = show(browse(), board, "#/")
    expect(page.get_by_test_id("live-status")).to_have_text("live")
    value = card_value(page, device, "temperature")
    expect(value).to_have_text("21.5")
    page.evaluate("window.__marker = 1")
    publish(board, device, b'{"temperature": 23.25}')
    expect(value).to_have_text("23.25", timeout=5_000)
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_the_device_page_draws_24h_and_7_day_charts_from_rollups_and_the_picker_redraws(
        board: Sensorlake, browse: Browse, device: str) -> None:
    now = time.time()
    for name in (device, f"{device}-b"):  # a reading every 3 minutes for 8 days, ending
        history = [{"ts": iso(now - 8 * DAY + 180 * i), "temperature": 20 + (i % 30) / 2}
                   for i in range(8 * 480 - 6)]  # 18 minutes ago, and 20 in the last 10
        recent = [{"ts": iso(now - 600 + 30 * i), "temperature": 22.0} for i in range(20)]
        send(board, name, history + recent)

    def rollups_landed() -> bool:
        answers = [httpx.get(f"{board.url}/api/v1/chart", timeout=30, params={
            "field": "temperature", "devices": device, "from": now - span, "to": now + 1,
        }).json() for span in (DAY, 7 * DAY)]
        return all(a["series"] and a["series"][0]["t"] for a in answers)

    wait_for("the 1-minute and 1-hour rollups", rollups_landed)

    page = show(browse(), board, f"#/devices/{device}")
    chart = page.locator('[data-testid="chart"][data-field="temperature"]')
    caption = page.locator("figure", has=chart).get_by_test_id("chart-source")
    points: dict[str, int] = {}
    for button, source, label in (("24h", "1m", "1-minute rollups"),
                                  ("7d", "1h", "1-hour rollups"),
                                  ("15m", "raw", "raw readings")):
        page.get_by_test_id(f"range-{button}").click()
        expect(page.get_by_test_id(f"range-{button}")).to_have_attribute("aria-pressed", "true")
        expect(chart).to_have_attribute("data-source", source)
        expect(caption).to_contain_text(label)
        assert page.url.endswith(f"?range={button}")
        points[button] = int(chart.get_attribute("data-points") or "0")
        canvas = chart.locator("canvas")
        expect(canvas).to_have_count(1)
        box = canvas.bounding_box()
        assert box is not None
        assert box["width"] > 100, box
        assert box["height"] > 50, box
        inked = canvas.evaluate("""c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
            return n;
        }""")
        assert inked > 0, f"{button}: nothing drawn on the canvas"
    # One 1-minute bucket per reading (every 3 min) in 24 h; one 1-hour bucket per hour in 7 d.
    assert 400 <= points["24h"] <= 2000, points
    assert 160 <= points["7d"] <= 2000, points
    assert points["24h"] > points["7d"], points
    assert points["15m"] == 20, points


def test_an_anomaly_appears_in_the_feed_and_its_alert_fires(
        board: Sensorlake, browse: Browse, device: str) -> None:
    publish(board, device, b'{"temperature": 400}')
    page = show(browse(), board, "#/alerts")
    anomaly = page.locator(f'[data-testid="anomaly-row"][data-device="{device}"]')
    expect(anomaly).to_have_count(1, timeout=15_000)  # the page refreshes every 5 s
    expect(anomaly).to_contain_text("400")
    expect(anomaly).to_contain_text("temperature-range")
    expect(anomaly).to_contain_text("[0, 50]")
    alert = page.locator(f'[data-testid="alert-row"][data-device="{device}"]')
    expect(alert).to_have_count(1, timeout=15_000)
    expect(alert).to_have_attribute("data-status", "firing")
    expect(alert).to_contain_text("400")
    expect(alert.get_by_test_id("silence-button")).to_be_visible()
    expect(page.get_by_test_id("nav-alerts-badge")).to_be_visible()


def test_the_sql_console_runs_a_query_shows_its_rows_and_downloads_them_as_csv(
        board: Sensorlake, browse: Browse, device: str, tmp_path: Path) -> None:
    send(board, device, [{"temperature": 22.75}, {"temperature": 20.5}, {"temperature": 21.5}])
    sql = (f"SELECT device_id, temperature FROM telemetry WHERE device_id = '{device}' "
           "ORDER BY temperature")
    assert len(board.wait_rows(sql, 3)) == 3

    page = show(browse(), board, "#/sql")
    page.get_by_test_id("sql-editor").fill(sql)
    page.get_by_test_id("sql-run").click()
    result = page.get_by_test_id("sql-result")
    expect(result.locator("thead th")).to_have_text(["device_id", "temperature"])
    rows = page.get_by_test_id("sql-row")
    expect(rows).to_have_count(3)
    for row, temperature in zip(rows.all(), ("20.5", "21.5", "22.75"), strict=True):
        expect(row.locator("td")).to_have_text([device, temperature])
    expect(page.get_by_test_id("sql-meta")).to_contain_text("3 rows")

    with page.expect_download() as info:
        page.get_by_test_id("sql-csv").click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_text().splitlines() == [
        "device_id,temperature", f"{device},20.5", f"{device},21.5", f"{device},22.75"]

    bad = "SELEC device_id FROM telemetry"
    answer = httpx.post(f"{board.url}/api/v1/query", json={"sql": bad}, timeout=30)
    assert answer.status_code == 400
    page.get_by_test_id("sql-editor").fill(bad)
    page.get_by_test_id("sql-run").click()
    error = page.get_by_test_id("sql-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(answer.json()["error"])


def test_with_a_key_required_no_data_shows_without_it_and_a_read_key_may_not_silence(
        fresh: Sensorlake, browse: Browse, device: str, tmp_path: Path) -> None:
    config = tmp_path / "sensorlake.toml"
    config.write_text(DETECTOR)
    fresh.extra_args = ("--config", str(config))
    fresh.start()
    publish(fresh, device, b'{"temperature": 400}')
    fresh.wait_rows(f"SELECT 1 FROM telemetry WHERE device_id = '{device}'", 1)
    wait_for("the alert", lambda: [a for a in httpx.get(f"{fresh.url}/api/v1/alerts").json()
                                   ["alerts"] if a["device"] == device])
    key = fresh.cli("keys", "create", "--scope", "read").stdout.strip()
    assert key
    wait_for("a key to be required",
             lambda: httpx.get(f"{fresh.url}/api/v1/devices").status_code == 401)

    tab = browse()
    page = show(tab, fresh, "")
    prompt = page.get_by_test_id("key-prompt")
    expect(prompt).to_be_visible()
    expect(page.get_by_test_id("live-status")).to_have_text("signed-out")

    def no_data_shown() -> None:
        expect(page.get_by_test_id("device-card")).to_have_count(0)
        assert device not in page.locator("body").inner_text()
        assert device not in page.content()

    no_data_shown()
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    page.get_by_test_id("key-input").fill(wrong)
    page.get_by_test_id("key-save").click()
    refused = prompt.get_by_test_id("dialog-error-box")
    expect(refused).to_contain_text("not valid")
    expect(prompt).to_be_visible()
    no_data_shown()

    page.get_by_test_id("key-input").fill(key)
    page.get_by_test_id("key-save").click()
    expect(prompt).to_have_count(0)
    expect(card_value(page, device, "temperature")).to_have_text("400")
    expect(page.get_by_test_id("live-status")).to_have_text("live")
    assert wrong not in page.content()
    assert key not in page.content()

    # Silencing is an admin action: a read key gets the server's 403, told in the dialog.
    page.get_by_test_id("nav-alerts").click()
    alert = page.locator(f'[data-testid="alert-row"][data-device="{device}"]')
    alert.get_by_test_id("silence-button").click()
    dialog = page.get_by_test_id("silence-dialog")
    dialog.get_by_test_id("silence-submit").click()
    denied = dialog.get_by_test_id("dialog-error-box")
    expect(denied).to_contain_text("Not allowed with this key")
    expect(denied).to_contain_text("admin")
    expect(dialog).to_be_visible()
    silences = httpx.get(f"{fresh.url}/api/v1/alerts", timeout=30,
                         headers={"Authorization": f"Bearer {key}"}).json()["silences"]
    assert silences == []


def test_the_pipeline_health_page_shows_its_tiles_with_values(
        board: Sensorlake, browse: Browse, device: str) -> None:
    publish(board, device, b'{"temperature": 20}')
    wait_for("a commit", lambda: httpx.get(f"{board.url}/api/v1/health").json()["last_commit"])
    page = show(browse(), board, "#/health")

    def value(metric: str) -> Locator:
        tile = page.locator(f'[data-testid="health-tile"][data-metric="{metric}"]')
        return tile.get_by_test_id("health-value")

    size = re.compile(r"^\d[\d.]* (B|KiB|MiB|GiB|TiB)$")
    expect(value("status")).to_have_text("ok")
    expect(value("ingest_per_s")).to_have_text(re.compile(r"^\d[\d.]* /s$"))
    expect(value("lag")).to_have_text(re.compile(r"^\d[\d,]*$"))
    expect(value("dead_letters")).to_have_text(re.compile(r"^\d[\d,]*$"))
    expect(value("last_commit")).to_have_text(re.compile(r"^\d+ (s|min|h|d) ago$"))
    expect(value("data_bytes")).to_have_text(size)
    expect(value("free_bytes")).to_have_text(size)
    expect(page.get_by_test_id("health-tile")).to_have_count(7)
    telemetry = page.locator('[data-testid="health-table-row"][data-table="telemetry"]')
    expect(telemetry).to_be_visible()
    # Every column of the tables list has a figure: none stays "—" for want of data.
    expect(page.get_by_test_id("health-table").locator("thead th")).to_have_text(
        ["Table", "Files", "Size"])
    expect(telemetry.locator("td")).to_have_text(["telemetry", re.compile(r"^[1-9][\d,]*$"), size])


def test_on_a_phone_in_dark_mode_nothing_scrolls_sideways_and_tab_reaches_the_skip_link(
        board: Sensorlake, browse: Browse, device: str) -> None:
    publish(board, device, b'{"temperature": 21.5}')
    for i in range(8):  # more cards than a phone's screen holds: the page scrolls
        send(board, f"{device}-{i}", [{"temperature": 20 + i}])
    tab = browse(viewport={"width": 390, "height": 844}, color_scheme="dark",
                 is_mobile=True, has_touch=True)
    page = show(tab, board, "#/")
    expect(card_value(page, device, "temperature")).to_have_text("21.5")
    expect(card_value(page, f"{device}-7", "temperature")).to_have_text("27")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"scrolls sideways: {widths}"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    text = page.evaluate("getComputedStyle(document.body).color")
    assert luminance(background) < 0.05, background
    assert luminance(text) > 0.4, text
    expect(page.get_by_test_id("theme-toggle")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("nav-menu")).to_be_visible()

    page.keyboard.press("Tab")
    skip = page.get_by_test_id("skip-link")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None
    assert box["x"] >= 0, f"not on screen: {box}"
    assert box["y"] >= 0, f"not on screen: {box}"
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("main")).to_be_focused()
    assert page.url.endswith("#/"), page.url
    # Skipped to: the page's heading shows, not hidden under the sticky bar.
    bar = page.locator(".topbar").bounding_box()
    heading = page.locator("main h1").bounding_box()
    assert bar is not None
    assert heading is not None
    assert heading["y"] >= bar["y"] + bar["height"], (heading, bar)


def test_every_page_loads_only_from_the_server_itself(
        board: Sensorlake, browse: Browse, device: str) -> None:
    publish(board, device, b'{"temperature": 21.5}')
    tab = browse()
    page = show(tab, board, "#/")
    expect(page.locator("main h1")).to_have_text("Devices")
    device_card(page, device).get_by_role("link", name=device).click()
    for nav, title in ((None, device), ("compare", "Compare devices"),
                       ("alerts", "Anomalies and alerts"), ("sql", "SQL console"),
                       ("health", "Pipeline health"), ("overview", "Devices")):
        if nav:
            page.get_by_test_id(f"nav-{nav}").click()
        expect(page.locator("main h1")).to_contain_text(title)
        expect(page.locator("body")).to_have_attribute("data-ready", "1")
    own = f"{board.url}/"
    elsewhere = [url for url in tab.requests if not url.startswith(own)]
    assert not elsewhere, elsewhere
    paths = {url[len(own) - 1:].split("?")[0] for url in tab.requests}
    for path in ("/", "/static/app.js", "/static/vendor/uplot/uPlot.iife.min.js",
                 "/api/v1/live", "/api/v1/devices", "/api/v1/chart", "/api/v1/health"):
        assert path in paths, (path, sorted(paths))
