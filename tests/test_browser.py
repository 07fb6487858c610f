"""Every dashboard page in headless Chromium, through the real nginx and the real API, over
a site the builder wrote from the fixed dataset: the login form, pages without script
errors or CSP violations, every chart loaded and drawn, the trades filter, a config
write and a pause made from the pages, the auto-refresh, and pages on other origins
that cannot write with the logged-in browser's session.

Full-page screenshots go to $OCULUS_SCREENSHOTS (or a pytest temp dir) for a person."""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.server
import io
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image, ImageStat
from psycopg import sql
from psycopg.types.json import Jsonb
from selenium import webdriver
from selenium.common import exceptions
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions, ui
from selenium.webdriver.support.ui import Select

from common.runtime import jobs, settings
from common.store import db
from functions import rollup, score
from site_builder import build
from tests import site_data, web

pytestmark = [pytest.mark.web, pytest.mark.browser]

CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)
WAIT_S = 10.0
REFRESH_WAIT_S = 8.0  # trades.html reloads itself every 5 s
PAUSE = "/api/control/pause"
M1, M2 = site_data.M1, site_data.M2

# What each page must show: its path, its <h1> (without the <small> note), and the
# tables (named by the heading above them) that must have rows. Users are 1, 2, 3.
PAGES = {
    "overview": ("/", "Overview", {"Top users", "Exposure by market", "System health"}),
    "leaders": ("/leaders.html", "Leaders", {"Leaders"}),
    "users": ("/users.html", "Followed users", {"Followed users"}),
    "user-1": ("/users/1.html", "alpha", {"Rates", "Trade feed", "Skip reasons"}),
    "user-2": (
        "/users/2.html",
        "Ann <b>&amp;</b> co",
        {"Rates", "Trade feed", "Simulated vs real copy", "Unpaired copy fills"},
    ),
    "user-3": ("/users/3.html", "gamma", {"Rates", "Trade feed"}),
    "user-4": ("/users/4.html", "my copy", {"Trade feed"}),  # the copy wallet of user 2
    "portfolio": ("/portfolio.html", "Global portfolio", {"Open positions", "Exposure by user"}),
    "trades": ("/trades.html", "Trades & copy attempts", {"Copy attempts", "Detected trades"}),
    "markets": ("/markets.html", "Markets", {"Markets"}),
    "attempt": ("/attempts/1.html", "Copy attempt 1", {"The leader's fills it copied"}),
    "market-1": (f"/markets/{M1}.html", "Will ETH trade above $5,000 by Friday?", {"By day"}),
    "market-2": (f"/markets/{M2}.html", "Will the <Senate> pass the bill?", {"By day"}),
    "config": ("/config.html", "Config", {"Global config", "Config tests", "Audit log"}),
    "config-test": ("/config-test/1.html", "Config test #1", {"Per-user copies", "Global copy"}),
    "status": ("/status.html", "System status", {"Jobs", "Probes (last hour)"}),
    "alerts": (
        "/alerts.html",
        "Alerts",
        {"Now", "Silences in force", "Rules", "History", "Deliveries"},
    ),
}
CHARTS = {"overview": 2, "portfolio": 3}  # a market page draws its histogram in HTML
# waterfall, equity, gap, and the latency sweep's two alpha-decay charts; histograms are HTML
CHARTS |= {f"user-{i}": 5 for i in (1, 2, 3, 4)}
CHARTS["user-2"] += 4  # both copies' waterfalls (the simulated one again, beside) and curves
CHARTS |= {"market-1": 1, "market-2": 1}  # mid and spread history

# Every table on the page, named by the nearest heading before it, with its data rows
# (not the "nothing yet" row).
TABLES_JS = """
const out = {};
let heading = "";
for (const el of document.querySelectorAll("h1, h2, table")) {
  if (el.tagName !== "TABLE") {
    const copy = el.cloneNode(true);
    for (const s of copy.querySelectorAll("small")) s.remove();
    heading = copy.textContent.trim();
    continue;
  }
  const rows = [...el.querySelectorAll("tbody tr")].filter(
    (r) => !r.classList.contains("none") && !r.querySelector("td.empty"));
  out[heading] = (out[heading] || 0) + rows.length;
}
return out;
"""
H1_JS = """
const h1 = document.querySelector("h1");
if (!h1) return null;
const copy = h1.cloneNode(true);
for (const s of copy.querySelectorAll("small")) s.remove();
return copy.textContent.trim();
"""
IMAGES_JS = """
return [...document.images].filter((img) => !img.hidden).map((img) => {
  const r = img.getBoundingClientRect();
  return {src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth,
          x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};
});
"""
STATUS_JS = 'return performance.getEntriesByType("navigation")[0].responseStatus;'
# The trades filter's effect: each filtered row, whether it is shown, and the count text.
FILTER_JS = """
const rows = [...document.querySelectorAll("#attempts tbody tr, #trades tbody tr")]
  .filter((r) => !r.classList.contains("none"));
return {hash: location.hash, count: document.querySelector("[data-count]").textContent,
        rows: rows.map((r) => ({table: r.closest("table").id, user: r.dataset.user,
                                reason: r.dataset.reason, slip: r.dataset.slip,
                                scope: r.dataset.scope, shown: !r.hidden}))};
"""


@dataclass
class Browser:
    """One Chromium, logged in or not, in front of the stack, and the builder that
    writes the site it serves."""

    stack: web.Stack
    driver: WebDriver
    conn: db.Conn
    builder: build.Builder
    users: list[int]
    shots: Path

    def url(self, path: str) -> str:
        return self.stack.url + path

    def wait(self, until: Callable[[WebDriver], Any], message: str, timeout: float = WAIT_S) -> Any:
        return ui.WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(until, message)

    def open(self, path: str) -> None:
        """Opens the page and waits until it (and everything it loads) has loaded."""
        self.driver.get(self.url(path))
        self.wait_loaded()

    def wait_loaded(self) -> None:
        self.wait(
            lambda d: d.execute_script("return document.readyState") == "complete",
            "page never finished loading",
        )

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def console(self) -> list[dict[str, Any]]:
        """Returns (and clears) the console messages since the last call."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")
        return entries

    def log_in(self) -> None:
        """Logs in through the form unless the browser already has a session."""
        if not self.driver.current_url.startswith(self.stack.url):
            self.open("/login.html")  # the cookie is only visible from its own site
        if self.driver.get_cookie("oculus_session") is None:
            self.open("/login.html")
            self.driver.find_element(By.NAME, "password").send_keys(web.PASSWORD)
            self.driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            self.wait(lambda d: d.get_cookie("oculus_session") is not None, "login failed")
            self.wait_loaded()
        self.console()

    def rebuild(self) -> None:
        """One builder round with no time budget: what changed is rebuilt."""
        done = self.builder.round(self.conn, budget_s=float("inf"))
        assert not done.failed, done.failed

    def one(self, query: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        row = self.conn.execute(query, params or {}).fetchone()
        assert row is not None
        return dict(row)

    def audit_rows(self) -> int:
        return int(self.one("SELECT count(*) AS n FROM audit_log")["n"])


@contextlib.contextmanager
def fresh_database(server_url: str, template: str) -> Iterator[str]:
    """A database cloned from the migrated template for this module; dropped after."""
    name = f"oculus_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield db.with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def chrome(chromium: str, chromedriver: str, log: Path) -> WebDriver:
    """Headless Chromium with its console kept; the paths are given, so Selenium Manager
    never looks for (or downloads) a browser or a driver."""
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=chromedriver, log_output=str(log))
    return webdriver.Chrome(service=service, options=options)


@pytest.fixture(scope="module")
def browser(
    pg_server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    chromium, chromedriver = web.require_browser()
    web.require_nginx()
    tmp = tmp_path_factory.mktemp("browser")
    shots = Path(os.environ.get("OCULUS_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with (
        fresh_database(pg_server_url, template_db) as url,
        db.connect(url, autocommit=True) as conn,
    ):
        users = site_data.load(conn)
        assert users == [1, 2, 3]
        assert site_data.add_real_copy(conn, users[1]) == 4
        score_ctx = jobs.Context(
            args=argparse.Namespace(), settings=settings.get(), clock=lambda: site_data.NOW
        )
        score.run_once(conn, score_ctx)
        builder = build.Builder(tmp / "public", clock=lambda: site_data.NOW)
        assert not builder.build_all(conn).failed
        with web.running_stack(url, tmp, site=None) as stack:
            driver = chrome(chromium, chromedriver, tmp / "chromedriver.log")
            try:
                yield Browser(stack, driver, conn, builder, users, shots)
            finally:
                driver.quit()


@pytest.fixture
def session(browser: Browser) -> Browser:
    """The browser, logged in, its console cleared."""
    browser.log_in()
    return browser


def retry_stale(action: Callable[[], Any]) -> Any:
    """Runs a few element actions again if a self-reloading page replaced the element."""
    for _ in range(3):
        try:
            return action()
        except exceptions.StaleElementReferenceException:
            continue
    return action()


# -- logging in -------------------------------------------------------------------------


def test_without_a_session_the_login_form_then_back_to_the_page(browser: Browser) -> None:
    driver = browser.driver
    driver.delete_all_cookies()
    browser.open("/")
    assert browser.js(STATUS_JS) == 401
    assert driver.title == "Log in · Oculus"
    assert browser.js(H1_JS) == "Oculus"
    assert driver.find_elements(By.CSS_SELECTOR, "header.top nav") == []
    assert "Overview" not in driver.page_source
    shot = screenshot(browser, "login")
    assert colours(shot) > 10 and spread(shot) > 3, "the login page looks blank"

    browser.open("/users/1.html")
    assert browser.js(STATUS_JS) == 401
    next_field = driver.find_element(By.NAME, "next")
    assert next_field.get_attribute("value") == "/users/1.html"
    driver.find_element(By.NAME, "password").send_keys(web.PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    browser.wait(lambda d: d.title.startswith("alpha"), "not back on the user's page")
    browser.wait_loaded()
    assert driver.current_url == browser.url("/users/1.html")
    assert browser.js(STATUS_JS) == 200
    assert browser.js(H1_JS) == "alpha"
    assert driver.get_cookie("oculus_session") is not None
    browser.console()  # the login page's 401 is in the console; the pages' tests start clean


def test_a_wrong_password_shows_the_failure_and_no_session(browser: Browser) -> None:
    driver = browser.driver
    driver.delete_all_cookies()
    browser.open("/trades.html")
    driver.find_element(By.NAME, "password").send_keys("not the password")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    browser.wait(lambda d: "failed=1" in d.current_url, "no failure page")
    browser.wait_loaded()
    assert driver.find_element(By.CSS_SELECTOR, ".failed").is_displayed()
    assert driver.get_cookie("oculus_session") is None
    browser.console()


# -- every page ---------------------------------------------------------------------------


def screenshot(browser: Browser, name: str) -> Image.Image:
    """Saves a full-page screenshot as <shots>/<name>.png; returns it decoded."""
    browser.js("window.scrollTo(0, 0)")
    size = browser.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    data = base64.b64decode(shot["data"])
    (browser.shots / f"{name}.png").write_bytes(data)
    return Image.open(io.BytesIO(data)).convert("RGB")


def colours(image: Image.Image) -> int:
    found = image.getcolors(maxcolors=1 << 16)
    return 1 << 16 if found is None else len(found)


def spread(image: Image.Image) -> float:
    """The standard deviation of the pixels' grey levels (0 for a blank image)."""
    return float(ImageStat.Stat(image.convert("L")).stddev[0])


def errors(entries: list[dict[str, Any]]) -> list[str]:
    """Console entries that are errors or CSP violations."""
    return [
        e["message"]
        for e in entries
        if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]
    ]


def load_images(browser: Browser) -> list[dict[str, Any]]:
    """Scrolls every (lazy) image into view, waits until each has loaded; returns them."""
    count = browser.js("return document.images.length")
    for i in range(count):
        browser.js("document.images[arguments[0]]?.scrollIntoView({block: 'center'})", i)
    browser.wait(
        lambda d: all(img["complete"] and img["width"] > 0 for img in d.execute_script(IMAGES_JS)),
        "an image did not load",
    )
    images: list[dict[str, Any]] = browser.js(IMAGES_JS)
    return images


def loaded_screenshot(browser: Browser, name: str) -> tuple[list[dict[str, Any]], Image.Image]:
    """Loads every image, then takes the screenshot; again if the page reloaded itself in
    between (pages refresh every 5-10 s). Returns the images and the screenshot."""
    for _ in range(2):
        browser.js("window.oculusTestMark = true")
        images = load_images(browser)
        shot = screenshot(browser, name)
        if browser.js("return window.oculusTestMark === true"):
            break
    return images, shot


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_loads_clean_with_its_charts_and_tables(session: Browser, page: str) -> None:
    path, heading, tables = PAGES[page]
    session.open(path)
    assert session.js(STATUS_JS) == 200
    assert session.js(H1_JS) == heading
    assert session.driver.title.endswith("· Oculus")
    rows = session.js(TABLES_JS)
    for table in tables:
        assert rows.get(table, 0) > 0, f"{page}: table under {table!r} is empty ({rows})"
    images, shot = loaded_screenshot(session, page)
    assert len(images) == CHARTS.get(page, 0), images
    for img in images:
        assert img["src"].startswith("/charts/") and "?v=" in img["src"], img
    assert errors(session.console()) == []

    assert shot.width >= 1000 and shot.height >= 400, shot.size
    assert colours(shot) > 40, f"{page}: the screenshot looks blank"
    assert spread(shot) > 10, f"{page}: the screenshot looks blank"
    for img in images:
        box = (int(img["x"]), int(img["y"]), int(img["x"] + img["w"]), int(img["y"] + img["h"]))
        assert img["w"] > 200 and img["h"] > 100, img
        chart = shot.crop(box)
        assert colours(chart) > 20, f"{page}: chart {img['src']} looks blank"
        assert spread(chart) > 5, f"{page}: chart {img['src']} looks blank"


def test_the_console_check_sees_a_csp_violation(session: Browser) -> None:
    # A page with an inline script and style, which the CSP forbids: proves the check
    # above would see a violation (or a script error) on a real page.
    probe = session.stack.public_dir / "csp-probe.html"
    probe.write_text(
        "<!doctype html><title>probe</title><style>body{color:red}</style>"
        "<script>document.title = 'ran'</script><script src='/static/missing.js'></script>"
    )
    try:
        session.open("/csp-probe.html")
        assert session.driver.title == "probe"  # the inline script never ran
        found = errors(session.console())
        assert any("Content Security Policy" in e for e in found), found
        assert any("missing.js" in e for e in found), found
    finally:
        probe.unlink()


# -- the trades filter -------------------------------------------------------------------


def filter_state(browser: Browser) -> dict[str, Any]:
    state: dict[str, Any] = browser.js(FILTER_JS)
    return state


def filtered_to(state: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> bool:
    """Whether exactly the rows `keep` accepts are shown, and the count says so, per
    table (attempts and fills are not added up)."""

    def count(table: str) -> str:
        rows = [r for r in state["rows"] if r["table"] == table]
        return f"{sum(r['shown'] for r in rows)} of {len(rows)}"

    said = f"{count('attempts')} attempts · {count('trades')} fills shown"
    return all(r["shown"] == keep(r) for r in state["rows"]) and state["count"] == said


def test_the_trades_filter_by_user_is_kept_in_the_url(session: Browser) -> None:
    user = str(session.users[1])
    session.open("/trades.html")
    everything = filter_state(session)
    assert all(r["shown"] for r in everything["rows"])
    # the copy wallet (4) is followed too: its fills are listed, never copied
    assert {r["user"] for r in everything["rows"]} == {str(u) for u in [*session.users, 4]}

    def choose() -> None:
        select = session.driver.find_element(By.CSS_SELECTOR, "form.filters select[name=user]")
        ui.Select(select).select_by_value(user)

    retry_stale(choose)

    def only_user(d: WebDriver) -> bool:
        state = filter_state(session)
        return state["hash"] == f"#user={user}" and filtered_to(state, lambda r: r["user"] == user)

    session.wait(only_user, "the user filter did not apply")
    state = filter_state(session)
    assert 0 < sum(r["shown"] for r in state["rows"]) < len(state["rows"])
    assert {r["table"] for r in state["rows"] if r["shown"]} == {"attempts", "trades"}

    session.driver.refresh()
    session.wait_loaded()
    session.wait(only_user, "the filter was lost on reload")
    assert session.js("return document.querySelector('select[name=user]').value") == user
    assert errors(session.console()) == []


def test_a_reason_in_the_url_filters_the_attempts(session: Browser) -> None:
    session.driver.get("about:blank")  # from trades.html a new hash would not reload it
    session.open("/trades.html#reason=SPREAD_TOO_WIDE")

    def by_reason(row: dict[str, Any]) -> bool:
        # Detected trades carry no reason: the reason filter leaves them alone.
        return row["reason"] is None or "SPREAD_TOO_WIDE" in row["reason"].split()

    session.wait(lambda d: filtered_to(filter_state(session), by_reason), "no reason filter")
    attempts = [r for r in filter_state(session)["rows"] if r["table"] == "attempts"]
    assert 0 < sum(r["shown"] for r in attempts) < len(attempts)
    assert session.js("return document.querySelector('select[name=reason]').value") == (
        "SPREAD_TOO_WIDE"
    )


def test_a_slippage_bar_lists_its_attempts(session: Browser) -> None:
    """A count on the user page's slippage histogram opens the trades page filtered to
    that user's own-copy attempts in that bucket: as many rows as the bar counts."""
    user = str(session.users[0])
    # The fixture's histograms are made up: count this user's attempts into theirs, by
    # the rollup's own fold, so the bars are the attempts'.
    attempts = session.conn.execute(
        "SELECT * FROM copy_attempt WHERE followed_user_id = %(u)s", {"u": int(user)}
    ).fetchall()
    per_user, _ = rollup.fold_attempts(attempts)
    for (scope, u, day), delta in per_user.items():
        session.conn.execute(
            """UPDATE rollup_attempt_daily SET slip_their_bps = %(h)s
               WHERE portfolio_scope = %(s)s AND followed_user_id = %(u)s AND day = %(d)s""",
            {"h": Jsonb(dict(delta["slip_their_bps"])), "s": scope, "u": u, "d": day},
        )
    assert not session.builder.build_all(session.conn).failed  # no watermark moved
    session.open(f"/users/{user}.html")
    links = session.js(
        """return [...document.querySelectorAll('table.histogram a[href*="slip="]')]
             .map((a) => [a.getAttribute('href'), Number(a.textContent)]);"""
    )
    assert links, "no slippage bar links"
    href, n = links[0]
    key = href.rsplit("slip=", 1)[1]
    session.open(href)

    def keep(r: dict[str, Any]) -> bool:
        if r["table"] == "trades":  # fills have no portfolio or slippage: user only
            return r["user"] == user
        return r["user"] == user and r["scope"] == "EXEC_USER" and r["slip"] == key

    session.wait(lambda d: filtered_to(filter_state(session), keep), "the slip filter")
    shown = [r for r in filter_state(session)["rows"] if r["table"] == "attempts" and r["shown"]]
    assert len(shown) == n  # the fixture's attempts all fall within 30 days


# -- the auto-refresh ----------------------------------------------------------------------


def test_trades_page_shows_a_new_fill_by_itself(session: Browser) -> None:
    session.open("/trades.html")
    count = "return document.querySelectorAll('#%s tbody tr:not(.none)').length"
    attempts, trades = session.js(count % "attempts"), session.js(count % "trades")
    session.js("window.oculusTestMark = true")
    site_data.add_fill(session.conn, session.users[0], 7)
    session.rebuild()
    session.wait(
        lambda d: d.execute_script(count % "attempts") == attempts + 2,  # both portfolios
        "the new attempts did not appear by themselves",
        timeout=REFRESH_WAIT_S,
    )
    assert session.js(count % "trades") == trades + 1
    assert session.js("return window.oculusTestMark === undefined")  # a reload, by itself
    assert errors(session.console()) == []


# -- writes from the pages -----------------------------------------------------------------


def system_control(browser: Browser) -> dict[str, Any]:
    return browser.one("SELECT paused, reason FROM system_control WHERE id = 1")


def wait_saved(browser: Browser, form: str) -> None:
    def saved(d: WebDriver) -> bool:
        text = d.execute_script(f"return document.querySelector('{form} output').textContent")
        assert not text.startswith(("not ", "HTTP", "cross")), text
        return bool(text.startswith("saved"))

    browser.wait(saved, f"{form}: the write was not saved")


def test_a_config_change_made_on_the_page(session: Browser) -> None:
    before = session.one(
        "SELECT max(version) AS version FROM guardrail_config WHERE scope = 'GLOBAL'"
    )["version"]
    audits = session.audit_rows()
    session.open("/config.html")
    field = session.driver.find_element(By.CSS_SELECTOR, "#global input[name=max_spread_micros]")
    assert field.get_attribute("value") == "0.02"
    field.clear()
    field.send_keys("0.03")
    session.driver.find_element(By.XPATH, "//button[normalize-space()='Apply changes']").click()
    wait_saved(session, "#global")

    newest = session.one(
        """SELECT version, max_spread_micros FROM guardrail_config WHERE scope = 'GLOBAL'
           ORDER BY version DESC LIMIT 1"""
    )
    assert newest == {"version": before + 1, "max_spread_micros": 30_000}
    assert session.audit_rows() == audits + 1
    audit = session.one("SELECT actor, action, after FROM audit_log ORDER BY id DESC LIMIT 1")
    assert audit["actor"] == "admin"
    assert "30000" in json.dumps(audit["after"])

    session.rebuild()
    session.open("/config.html")
    in_force = session.js(
        """const row = [...document.querySelectorAll("#global tbody tr")]
             .find((r) => r.querySelector("input[name=max_spread_micros]"));
           return [row.children[1].textContent.trim(),
                   row.querySelector("input").value];"""
    )
    assert in_force == ["0.030", "0.03"]
    assert errors(session.console()) == []


def test_pause_and_resume_from_the_config_page(session: Browser) -> None:
    assert system_control(session)["paused"] is False
    audits = session.audit_rows()
    session.open("/config.html")
    session.driver.find_element(By.CSS_SELECTOR, "#pause input[name=reason]").send_keys("drill")
    session.driver.find_element(By.XPATH, "//button[normalize-space()='Pause copying']").click()
    session.wait(expected_conditions.alert_is_present(), "no confirmation asked")
    alert = session.driver.switch_to.alert
    assert alert.text == "Pause every copy?"
    alert.accept()
    wait_saved(session, "#pause")
    assert system_control(session) == {"paused": True, "reason": "drill"}
    assert session.audit_rows() == audits + 1

    session.rebuild()
    session.open("/")
    banner = session.driver.find_element(By.CSS_SELECTOR, ".banner.paused")
    assert banner.is_displayed()
    assert banner.text.startswith("Copying is paused: drill.")
    screenshot(session, "overview-paused")

    session.open("/config.html")
    session.driver.find_element(By.XPATH, "//button[normalize-space()='Resume copying']").click()
    wait_saved(session, "#pause")
    assert system_control(session)["paused"] is False
    session.rebuild()
    session.open("/")
    assert session.driver.find_elements(By.CSS_SELECTOR, ".banner.paused") == []
    assert errors(session.console()) == []


def test_silence_an_alert_from_the_alerts_page_then_lift_it(session: Browser) -> None:
    """A firing alert's Silence button (with its duration) is one audited write; the
    silence then lists with a Lift button, which lifts it (another audited write)."""
    session.one(
        """INSERT INTO alert (rule, labels, severity, state, since, fired_at, message,
                              updated_at)
           VALUES ('listener_down', '{"host": "a"}', 'critical', 'FIRING', now(), now(),
                   'listener down', now()) RETURNING id"""
    )
    audits = session.audit_rows()
    session.rebuild()
    session.open("/alerts.html")
    row = "//tr[td[normalize-space()='listener_down'] and .//button]"
    form = session.driver.find_element(By.XPATH, row + "//form")
    Select(form.find_element(By.NAME, "minutes")).select_by_visible_text("4 h")
    form.find_element(By.XPATH, ".//button[normalize-space()='Silence']").click()
    session.wait(lambda d: session.audit_rows() == audits + 1, "the silence was not written")
    silence = session.one(
        "SELECT labels, extract(epoch FROM until - created_at) AS s FROM alert_silence"
        " WHERE rule = 'listener_down'"
    )
    assert silence["labels"] == {"host": "a"} and 4 * 3600 - 60 < silence["s"] <= 4 * 3600 + 5
    audit = session.one("SELECT actor, action FROM audit_log ORDER BY id DESC LIMIT 1")
    assert audit == {"actor": "admin", "action": "alert.silence"}

    session.rebuild()
    session.open("/alerts.html")
    lift = "//tr[td[normalize-space()='listener_down']]//button[normalize-space()='Lift']"
    session.driver.find_element(By.XPATH, lift).click()
    session.wait(lambda d: session.audit_rows() == audits + 2, "the silence was not lifted")
    gone = session.one("SELECT count(*) AS n FROM alert_silence WHERE rule = 'listener_down'")
    assert gone == {"n": 0}
    assert errors(session.console()) == []


def test_pause_and_resume_from_the_overview(session: Browser) -> None:
    """The copying state has its control beside it on the overview: pause (with a
    reason, confirmed), then resume; each is one audited write."""
    assert system_control(session)["paused"] is False
    audits = session.audit_rows()
    session.open("/")
    session.driver.find_element(By.CSS_SELECTOR, "#copying input[name=reason]").send_keys("lunch")
    session.driver.find_element(By.XPATH, "//button[normalize-space()='Pause copying']").click()
    session.wait(expected_conditions.alert_is_present(), "no confirmation asked")
    session.driver.switch_to.alert.accept()
    wait_saved(session, "#copying")
    assert system_control(session) == {"paused": True, "reason": "lunch"}
    session.rebuild()
    session.open("/")
    session.driver.find_element(By.XPATH, "//button[normalize-space()='Resume copying']").click()
    wait_saved(session, "#copying")
    assert system_control(session)["paused"] is False
    assert session.audit_rows() == audits + 2
    session.rebuild()
    assert errors(session.console()) == []


# -- pages on other origins ----------------------------------------------------------------

# Tries every way a page can send a write: a JSON fetch with credentials (preflighted), a
# "simple" no-cors fetch, an HTML form, and a text/plain form whose body looks like JSON.
EVIL_PAGE = """<!doctype html><title>evil</title>
<form id="form" method="post" action="{url}" target="one"><input name="paused" value="true">
</form>
<form id="plain" method="post" action="{url}" target="two" enctype="text/plain">
<input name='{{"paused": true, "reason": "' value='csrf"}}'></form>
<iframe name="one"></iframe><iframe name="two"></iframe>
<script>
async function attack() {{
  const tried = {{}};
  const body = JSON.stringify({{paused: true, reason: "csrf"}});
  try {{
    const r = await fetch("{url}", {{method: "POST", credentials: "include",
      headers: {{"Content-Type": "application/json"}}, body}});
    tried.json = r.status;
  }} catch (e) {{ tried.json = "blocked"; }}
  try {{
    await fetch("{url}", {{method: "POST", mode: "no-cors", credentials: "include",
      headers: {{"Content-Type": "text/plain"}}, body}});
    tried.simple = "sent";
  }} catch (e) {{ tried.simple = "blocked"; }}
  document.getElementById("form").submit();
  document.getElementById("plain").submit();
  document.body.dataset.tried = JSON.stringify(tried);
  document.title = "done";
}}
attack();
</script>"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def other_site(directory: Path) -> Iterator[int]:
    """Serves `directory` on another loopback port; returns the port."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def pause_posts(browser: Browser) -> list[int]:
    """The statuses nginx logged for POSTs to the pause route, oldest first."""
    log = browser.stack.nginx_log.read_text(errors="replace")
    return [int(s) for s in re.findall(rf'"POST {PAUSE} HTTP/[0-9.]+" (\d+)', log)]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        # Another port on the same host is another origin but the same site: the browser
        # sends the session cookie, and the API refuses the Origin.
        ("127.0.0.1", 403),
        # Another host is another site: SameSite=Strict keeps the cookie home.
        ("localhost", 401),
    ],
)
def test_a_page_on_another_origin_cannot_write(
    session: Browser, tmp_path: Path, host: str, status: int
) -> None:
    assert session.driver.get_cookie("oculus_session") is not None
    control, audits, posts = system_control(session), session.audit_rows(), pause_posts(session)
    (tmp_path / "evil.html").write_text(EVIL_PAGE.format(url=session.url(PAUSE)))
    with other_site(tmp_path) as port:
        session.driver.get(f"http://{host}:{port}/evil.html")
        session.wait(lambda d: d.title == "done", "the other site's page did not run")
        tried = json.loads(session.js("return document.body.dataset.tried"))
        assert tried == {"json": "blocked", "simple": "sent"}  # no CORS: no preflight passes
        # The simple fetch and both forms reach nginx, and are refused.
        session.wait(lambda d: len(pause_posts(session)) >= len(posts) + 3, "posts not sent")
    assert pause_posts(session)[len(posts) :] == [status] * 3
    assert system_control(session) == control
    assert session.audit_rows() == audits
    session.console()  # the other site's failed requests are logged there


# -- the Leaders table's sort ------------------------------------------------------------

COLUMN_JS = """
return Array.from(document.querySelectorAll("#leaders tbody tr"))
  .map((tr) => tr.cells[arguments[0]].dataset.v);
"""


def test_the_leaders_table_sorts_by_a_clicked_column_and_keeps_it_on_reload(
    session: Browser,
) -> None:
    session.open("/leaders.html")
    labels = session.js(COLUMN_JS, 2)
    assert sorted(labels) == sorted(["alpha", "Ann <b>&amp;</b> co", "gamma"])
    roi = session.driver.find_element(By.CSS_SELECTOR, "#leaders thead th:nth-child(5)")
    roi.click()  # ROI 30 d, ascending
    up = [float(v) for v in session.js(COLUMN_JS, 4)]
    assert up == sorted(up) and len(set(up)) > 1, up
    roi.click()  # again: descending, kept in the URL
    down = [float(v) for v in session.js(COLUMN_JS, 4)]
    assert down == sorted(up, reverse=True)
    assert session.driver.current_url.endswith("#sort=4-desc")
    session.driver.refresh()
    session.wait(lambda d: d.execute_script(COLUMN_JS, 4) is not None, "no table after reload")
    assert [float(v) for v in session.js(COLUMN_JS, 4)] == down
    name = session.driver.find_element(By.CSS_SELECTOR, "#leaders thead th:nth-child(3)")
    name.click()
    assert [v.lower() for v in session.js(COLUMN_JS, 2)] == sorted(v.lower() for v in labels)
    assert errors(session.console()) == []


# -- phones and freshness ---------------------------------------------------------------


def test_every_page_fits_a_phone_with_the_nav_wrapped(session: Browser) -> None:
    """At 390 px nothing is wider than the screen: the nav wraps, tables scroll inside
    their own box, charts take the full width."""
    session.driver.set_window_size(390, 844)
    try:
        width = session.js("return window.innerWidth")
        for page, (path, _, _) in PAGES.items():
            session.open(path)
            overflow = session.js("return document.documentElement.scrollWidth")
            assert overflow <= width, f"{page}: {overflow} px wide on a {width} px screen"
            nav = session.js("const r = document.querySelector('header.top nav')"
                             ".getBoundingClientRect(); return [r.left, r.right]")  # fmt: skip
            assert nav[0] >= 0 and nav[1] <= width, f"{page}: the nav spills out ({nav})"
            for img in session.js(IMAGES_JS):
                assert img["w"] >= width * 0.8, f"{page}: a chart is not full width ({img})"
        screenshot(session, "phone-user-2")
    finally:
        session.driver.set_window_size(1600, 1000)


def test_a_stale_build_turns_amber_then_red_and_its_live_tags_say_stale(
    session: Browser,
) -> None:
    real_now = datetime.now(UTC)
    for job in ("poll", "snapshot"):  # the data is fresh: only the build's age counts
        session.conn.execute(
            "INSERT INTO job_run (job, started_at, finished_at, status) VALUES (%s, %s, %s, 'OK')",
            (job, real_now - timedelta(seconds=2), real_now - timedelta(seconds=1)),
        )
    states = {}
    for label, age_s in (("fresh", 1), ("amber", 150), ("red", 600)):
        built_at = real_now - timedelta(seconds=age_s)
        assert build.build_page(session.conn, session.builder.site, "config", built_at, 180.0)
        session.open(f"/config.html?built={age_s}")  # not the browser's cached copy
        states[label] = session.js(
            "return [document.body.className, document.getElementById('stale').hidden,"
            " document.querySelector('[data-live]')?.textContent]"
        )
    assert states["fresh"][0] == "" and states["fresh"][1] is True
    assert states["fresh"][2] == "ACTIVE"
    assert states["amber"][0] == "stale-amber" and states["amber"][1] is False
    assert states["amber"][2] == "ACTIVE"  # amber: a warning; the indicators hold
    assert states["red"][0] == "stale-red" and states["red"][2] == "stale"
    assert "site builder may be down" in session.js(
        "return document.getElementById('stale').textContent"
    )
    assert errors(session.console()) == []  # the favicon is there: no 404
    session.conn.execute(
        "DELETE FROM job_run WHERE started_at > %s", (real_now - timedelta(minutes=1),)
    )
    # the config page as the other tests see it: built at the dataset's time again
    assert build.build_page(session.conn, session.builder.site, "config", site_data.NOW, 180.0)


def test_any_table_sorts_by_a_clicked_header_and_has_a_search_box(session: Browser) -> None:
    session.open("/trades.html")
    session.js("sessionStorage.clear()")
    session.open("/trades.html")
    column = session.js(
        "return [...document.querySelectorAll('#attempts thead th')]"
        ".findIndex((th) => th.textContent.trim() === 'Their price')"
    )
    prices_js = (
        "return [...document.querySelectorAll('#attempts tbody tr')]"
        f".map((r) => Number(r.cells[{column}].textContent))"
    )
    before = session.js(prices_js)
    session.driver.find_elements(By.CSS_SELECTOR, "#attempts thead th")[column].click()
    ascending = session.js(prices_js)
    assert ascending == sorted(before) and ascending != before
    session.driver.find_elements(By.CSS_SELECTOR, "#attempts thead th")[column].click()
    assert session.js(prices_js) == sorted(before, reverse=True)
    session.open("/trades.html")  # the page reloads itself: the order stays
    assert session.js(prices_js) == sorted(before, reverse=True)
    box = session.driver.find_element(By.CSS_SELECTOR, "input.table-search")
    box.send_keys("SPREAD_TOO_WIDE")
    shown = session.js(
        "return [...document.querySelectorAll('#attempts tbody tr')]"
        ".filter((r) => getComputedStyle(r).display !== 'none').map((r) => r.textContent)"
    )
    assert shown and all("SPREAD_TOO_WIDE" in t for t in shown) and len(shown) < len(before)
    session.js("sessionStorage.clear()")
    assert errors(session.console()) == []


def test_a_time_range_shows_on_every_chart_and_lasts_through_a_reload(session: Browser) -> None:
    visible = """return [...document.querySelectorAll("figure[data-ranges]")].map((f) =>
        [...f.querySelectorAll("img[data-range]")].filter((i) => !i.hidden)
          .map((i) => i.dataset.range + ":" + (i.complete && i.naturalWidth > 0)));"""
    session.open("/users/1.html")
    want = [["30d:true"], ["30d:true"]]  # equity and gap, once their images loaded
    session.wait(lambda d: session.js(visible) == want, "no 30 d charts")
    session.driver.find_element(
        By.CSS_SELECTOR, "figure[data-ranges] button[data-range='24h']"
    ).click()
    session.wait(lambda d: session.js(visible) == [["24h:true"], ["24h:true"]], "no 24 h charts")
    pressed = "return document.querySelector('button[aria-pressed=true]').dataset.range"
    assert session.js(pressed) == "24h"
    session.open("/")  # another page: the choice holds there too
    session.wait(lambda d: session.js(visible) == [["24h:true"]], "the range was not kept")
    session.js("sessionStorage.removeItem('oculus-range')")
    assert errors(session.console()) == []


def test_a_time_range_hides_the_older_rows_of_a_table(session: Browser) -> None:
    old = site_data.NOW - timedelta(days=2)
    trade = site_data.add_fill(session.conn, session.users[2], 11, at=old)
    session.rebuild()
    session.open("/trades.html")
    # Each fill row: (its time, hidden by the range) and the page's build time.
    state = """return [document.body.dataset.generated,
      [...document.querySelectorAll("#trades tbody tr[data-at]")].map((r) =>
        [r.dataset.at, r.hasAttribute("data-range-hidden")]),
      document.querySelector("[data-count]").textContent];"""

    def hides_older_than(span: timedelta) -> bool:
        built, rows, count = session.js(state)
        cutoff = datetime.fromisoformat(built) - span
        want = [datetime.fromisoformat(at) < cutoff for at, _ in rows]
        shown = sum(not w for w in want)
        return [h for _, h in rows] == want and f"{shown} of {len(rows)} fills" in count

    session.wait(lambda d: hides_older_than(timedelta(days=30)), "30 d by default")
    session.driver.find_element(By.CSS_SELECTOR, ".table-ranges button[data-range='24h']").click()
    session.wait(lambda d: hides_older_than(timedelta(hours=24)), "24 h")
    _, rows, _ = session.js(state)
    assert [h for at, h in rows if datetime.fromisoformat(at) == old] == [True]
    session.driver.find_element(By.CSS_SELECTOR, ".table-ranges button[data-range='all']").click()
    session.wait(lambda d: not any(h for _, h in session.js(state)[1]), "all hides nothing")
    session.js("sessionStorage.removeItem('oculus-range')")
    assert trade > 0 and errors(session.console()) == []


def test_a_csv_download_through_nginx_holds_the_table_s_rows(session: Browser) -> None:
    session.open("/portfolio.html")
    got = session.js(
        """const a = document.querySelector('a[download="positions.csv"]');
           const r = await fetch(a.getAttribute("href"), {credentials: "same-origin"});
           const text = await r.text();
           const rows = document.querySelectorAll("h2 + table.wide-table")[0].tBodies[0].rows;
           return [r.status, r.headers.get("content-type"), text.split("\\n")[0],
                   text.trim().split("\\n").length - 1, rows.length];"""
    )
    status, kind, header, lines, table_rows = got
    assert status == 200 and kind.startswith("text/csv"), got
    assert header.startswith("condition_id,market,outcome,asset_id,shares"), header
    assert lines == table_rows > 0


def test_an_attempt_opens_with_its_book_walk_and_the_leader_s_fills(session: Browser) -> None:
    session.open("/trades.html")
    link = session.driver.find_element(By.CSS_SELECTOR, "#attempts tbody a[href^='/attempts/']")
    href = link.get_attribute("href")
    link.click()
    session.wait(lambda d: d.current_url == href, "the attempt page did not open")
    session.wait_loaded()
    info = session.js(
        """return [document.querySelector("h1").textContent,
                   document.querySelectorAll("table.book tbody tr:not(.boundary)").length,
                   document.querySelectorAll("table.book tr.taken").length,
                   [...document.querySelectorAll("h2")]
                     .map((h) => h.firstChild.textContent.trim())];"""
    )
    heading, levels, taken, sections = info
    assert heading.startswith("Copy attempt") and levels >= 1, info
    assert "The leader's fills it copied" in sections and "Order book at decision" in sections
    attempt = int(href.rsplit("/", 1)[1].split(".")[0])
    row = session.one("SELECT decision, filled_share_micros FROM copy_attempt WHERE id = %(i)s",
                      {"i": attempt})  # fmt: skip
    assert (taken > 0) == (row["decision"] == "EXECUTE" and row["filled_share_micros"] > 0)
    assert errors(session.console()) == []
