"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium."""

from __future__ import annotations

import shutil
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]


def chromium(profile: Path) -> webdriver.Chrome:
    """A fresh headless Chromium with its own profile directory; fails loudly if missing."""
    binary = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    assert binary and driver, \
        "headless Chromium missing: apt-get install -y chromium chromium-driver"
    options = Options()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait(browser: webdriver.Chrome, condition, timeout: float = 30.0, what: str = ""):
    """``condition(browser)`` once truthy; on timeout an AssertionError naming ``what`` with
    the page's text and the browser console, for the failure report."""
    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.2,
                             ignored_exceptions=[StaleElementReferenceException]
                             ).until(condition, what)
    except TimeoutException:
        body = browser.find_element(By.TAG_NAME, "body").text
        console = browser.get_log("browser")
        raise AssertionError(f"timed out waiting for {what} at {browser.current_url}\n"
                             f"page:\n{body}\nconsole: {console}") from None
