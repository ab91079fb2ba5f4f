"""The dashboard end to end in a real headless Chromium against a real cluster: the stuck
chord is shown with its diagnosis, filters work, a wrong token is refused, and the right one
fails the chord."""

from __future__ import annotations

from celery import chord
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select
from sqlalchemy import create_engine, text

from chordguard.monitor.diagnose import CATALOG
from tests.browser import chromium, wait
from tests.cluster import PG_URL, Cluster, wait_for
from tests.serving import listed

pytest_plugins = ("tests.serve_fixtures",)

TOKEN = "browser-test-token"


def text_of(browser, selector: str) -> str:
    """The element's text; the page re-renders every few seconds, so a stale read retries."""
    for _ in range(5):
        try:
            return browser.find_element(By.CSS_SELECTOR, selector).text
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} kept being replaced while read")


def fail_from_page(browser, token: str) -> str:
    """Type ``token``, press the fail button, accept the confirmation; the message shown."""
    box = browser.find_element(By.ID, "token")
    box.clear()
    box.send_keys(token + Keys.TAB)
    browser.execute_script("document.getElementById('message').textContent = ''")
    browser.find_element(By.ID, "fail-button").click()
    wait(browser, ec.alert_is_present(), what="the confirmation dialog").accept()
    return wait(browser, lambda b: text_of(b, "#message"), what="the action's outcome")


def lose_a_header(cluster: Cluster) -> tuple[str, str]:
    """An unlock chord whose finished header's result row is deleted: it reads PENDING
    forever and chord_unlock polls forever (lost_header). Returns (group id, callback id)."""
    app = cluster.app
    result = chord([app.signature("t.add", (1, 1)), app.signature("t.sleep", (3,))])(
        app.signature("t.tsum"))
    lost = result.parent.results[0].id
    wait_for(lambda: app.AsyncResult(lost).state == "SUCCESS", what="the first header done")
    with create_engine(PG_URL).begin() as db:
        db.execute(text("DELETE FROM celery_taskmeta WHERE task_id = :id"), {"id": lost})
    return result.parent.id, result.id


def test_dashboard_shows_the_stuck_chord_and_fails_it(pg_cluster, served, tmp_path):
    gid, callback_id = lose_a_header(pg_cluster)
    server = served(pg_cluster, TOKEN)
    code = "lost_header"

    browser = chromium(tmp_path / "chromium-profile")
    try:
        browser.get(server.url + "/")
        row = f'tr[data-chord="{gid}"]'
        wait(browser, lambda b: any(code in r.text for r in b.find_elements(By.CSS_SELECTOR, row)),
             timeout=60, what="the stuck chord listed with its diagnosis")
        assert "t.tsum" in text_of(browser, row)
        assert text_of(browser, "#health") == "unhealthy"
        assert text_of(browser, "#mode") == "actions enabled"
        Select(browser.find_element(By.NAME, "kind")).select_by_value("redis")
        wait(browser, ec.invisibility_of_element_located((By.CSS_SELECTOR, row)),
             what="the chord filtered out")
        Select(browser.find_element(By.NAME, "kind")).select_by_value("")
        Select(browser.find_element(By.NAME, "diagnosis")).select_by_value(code)
        wait(browser, ec.url_contains(f"diagnosis={code}"), what="the filter in the URL")
        wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, row)),
             what="the chord filtered in by its diagnosis")

        wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, f"{row} a").click() or True,
             what="the chord's link clicked")  # retried if the list re-rendered meanwhile
        diagnosis = f'.diagnosis[data-code="{code}"]'
        wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, diagnosis)),
             what="the diagnosis explained on the chord page")
        assert CATALOG[code].explanation in text_of(browser, diagnosis)
        assert browser.find_elements(By.CSS_SELECTOR, "#timeline .tick")
        assert callback_id in text_of(browser, "#chord")

        refused = fail_from_page(browser, "not-the-token")
        assert "not failed" in refused and "token" in refused
        assert pg_cluster.app.AsyncResult(callback_id).state == "PENDING"

        done = fail_from_page(browser, TOKEN)
        assert done.startswith("chord failed"), done
        wait(browser, ec.presence_of_element_located((By.ID, "not-in-flight")), timeout=60,
             what="the chord gone from the page")
        assert not browser.find_element(By.ID, "fail-box").is_displayed()
    finally:
        browser.quit()
    callback = pg_cluster.app.AsyncResult(callback_id)
    assert callback.state == "FAILURE"
    assert "failed by chordguard" in str(callback.result)
    assert listed(server, gid) is None


def test_dashboard_pages_through_the_chord_list(redis_cluster, served, tmp_path):
    """One chord per page (``?limit=1``): "showing X–Y of Z", next and previous move the
    page (kept in the URL), and each button is disabled at its end."""
    app = redis_cluster.app
    gids = {chord([app.signature("t.sleep", (60,))])(app.signature("t.tsum")).parent.id
            for _ in range(3)}
    server = served(redis_cluster)
    wait_for(lambda: server.get("/api/chords").json()["matched"] == 3, what="three chords")
    browser = chromium(tmp_path / "profile")
    try:
        browser.get(f"{server.url}/?limit=1")
        seen = []
        for shown in (1, 2, 3):
            wait(browser, lambda b, n=shown: text_of(b, "#counts") ==
                 f"showing {n}–{n} of 3 chords", what=f"page {shown}")
            seen.append(text_of(browser, "#chords tbody td.id"))
            assert browser.find_element(By.ID, "previous").is_enabled() == (shown > 1)
            assert browser.find_element(By.ID, "next").is_enabled() == (shown < 3)
            if shown < 3:
                browser.find_element(By.ID, "next").click()
        assert set(seen) == gids and "offset=2" in browser.current_url
        browser.find_element(By.ID, "previous").click()
        wait(browser, lambda b: text_of(b, "#counts") == "showing 2–2 of 3 chords",
             what="back to page 2")
        Select(browser.find_element(By.NAME, "kind")).select_by_value("unlock")
        wait(browser, lambda b: text_of(b, "#counts") == "no chord matches (3 in flight)",
             what="a filter back on the first page")
        assert "offset" not in browser.current_url
    finally:
        browser.quit()
