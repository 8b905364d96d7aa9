"""The API's page in a real headless browser (Debian's chromium driven by Playwright):
it asks for a token, loads, lists the keys, searches them, draws the chosen key's fan
chart with its 80 % and 95 % bands and its alerts, and redraws when a new forecast is
committed to the topic.

``STREAMCAST_SCREENSHOT=docs/api-page.png`` also saves the screenshot there (how
docs/api-page.png was made)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Page, async_playwright, expect

from streamcast.core.records import ForecastBatch, encode_forecasts
from tests.support.api import (
    AUDIENCE,
    ISSUER,
    SECRET,
    ApiProcess,
    alert_records,
    api_env,
    token,
)
from tests.support.kafka import create_topics, unique_topic
from tests.support.service import produce

pytestmark = pytest.mark.kafka

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HORIZON, LEVELS = 24, (0.8, 0.95)


def _forecasts(keys: list[str], origin: int, seed: int) -> ForecastBatch:
    """Daily-shaped forecasts with bands widening along the horizon."""
    rng = np.random.default_rng(seed)
    n = len(keys)
    steps = np.arange(1, HORIZON + 1)
    level = rng.uniform(200, 600, size=(n, 1))
    values = level + 0.4 * level * np.sin((origin / 3600 + steps) / 24 * 2 * np.pi)
    width = (
        0.04
        * level[:, :, None]
        * np.sqrt(steps)[None, None, :]
        * np.array([1.0, 1.6])[None, :, None]
    )
    return ForecastBatch(
        keys, np.full(n, origin), values, "pedestrians", "20261124T0900Z", 3600, HORIZON,
        np.zeros(n, np.int64), levels=LEVELS,
        lower=values[:, None, :] - width, upper=values[:, None, :] + width,
    )  # fmt: skip


def _iso(ts_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_s))


async def _seed(bootstrap: str, topics: list[str], keys: list[str], origin: int) -> None:
    """Forecasts of every key and two alerts of pump-17."""
    await create_topics(bootstrap, topics)
    await produce(bootstrap, topics[0], encode_forecasts(_forecasts(keys, origin, 1)))
    alerts = [
        ("pump-17", origin - 7200, "input_drift", 3.4, "warning"),
        ("pump-17", origin, "error_drift", 13.2, "critical"),
    ]
    await produce(bootstrap, topics[1], alert_records(alerts, model="pedestrians"))


async def _updates_live(page: Page, bootstrap: str, topics: list[str], later: int) -> None:
    """A new forecast and a new alert committed to the topics show without a reload."""
    chart = page.get_by_test_id("chart")
    band_before = await chart.locator("path.band-95").get_attribute("d")
    await produce(bootstrap, topics[0], encode_forecasts(_forecasts(["pump-17"], later, 2)))
    await expect(page.get_by_test_id("origin")).to_contain_text(_iso(later)[11:16], timeout=5_000)
    assert await chart.locator("path.band-95").get_attribute("d") != band_before
    fresh = [("pump-17", later, "recovered", 1.2, "info")]
    await produce(bootstrap, topics[1], alert_records(fresh, model="pedestrians"))
    await expect(page.get_by_test_id("alert")).to_have_count(3, timeout=5_000)
    await expect(page.get_by_test_id("alert").first).to_contain_text("recovered")


async def test_the_page_lists_keys_draws_bands_and_updates_live(
    bootstrap: str, tmp_path: Path
) -> None:
    """With JWT auth on: the page asks for a token (the API answered 401), then works
    with it, the event stream included (read with fetch, the token in a header)."""
    if not CHROMIUM.exists():  # noqa: ASYNC240 - one stat
        pytest.fail("needs Debian's chromium: apt-get install -y chromium (.ci/run does)")
    prefix = unique_topic("page")
    topics = [f"{prefix}-forecasts", f"{prefix}-alerts"]
    keys = [f"sensor-{i}" for i in range(12)] + ["pump-17", "pump-18"]
    origin = (int(time.time()) // 3600 - 1) * 3600
    await _seed(bootstrap, topics, keys, origin)
    env = api_env(
        bootstrap, prefix, api_auth="jwt", api_jwt_secret=SECRET, api_jwt_audience=AUDIENCE,
        api_jwt_issuer=ISSUER,
    )  # fmt: skip
    api = ApiProcess(env, tmp_path / "api.log").start()
    shot = tmp_path / "api-page.png"
    try:
        await api.wait_ready()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1200, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            await page.goto(api.url + "/")
            await expect(page.locator("#token-dialog")).to_be_visible()
            await page.locator("#token-input").fill(token(scopes="forecasts:read"))
            await page.get_by_role("button", name="use token").click()
            listed = page.get_by_test_id("key")
            await expect(listed).to_have_count(len(keys))
            await page.get_by_label("search keys").fill("pump")
            await expect(listed).to_have_count(2)
            await listed.filter(has_text="pump-17").click()
            await expect(page.get_by_test_id("title")).to_have_text("pump-17")
            chart = page.get_by_test_id("chart")
            for drawn, count in (("path.band-95", 1), ("path.band-80", 1), ("path.median", 1),
                                 ("circle.dot", HORIZON)):  # fmt: skip
                await expect(chart.locator(drawn)).to_have_count(count)
            assert await chart.locator("path.band-95").get_attribute("data-level") == "0.95"
            await expect(page.get_by_test_id("origin")).to_contain_text(_iso(origin)[11:16])
            await expect(page.get_by_test_id("alert")).to_have_count(2)
            await expect(page.get_by_test_id("alert").first).to_contain_text("error_drift")
            await expect(page.get_by_test_id("live")).to_have_text("live")
            await _updates_live(page, bootstrap, topics, origin + 3600)
            await page.wait_for_timeout(1_300)  # the update's highlight fades
            await page.screenshot(path=str(shot), full_page=True)
            await browser.close()
            assert errors == []
        if os.environ.get("STREAMCAST_SCREENSHOT"):
            shutil.copy(shot, os.environ["STREAMCAST_SCREENSHOT"])
    finally:
        assert api.stop() == 0
