"""The monitoring dashboard in a real headless browser (Debian's Chromium via Selenium)."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import order_body


@pytest.fixture
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("Chromium and chromedriver are needed for the dashboard test: `make browser` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="e2e-chromium-")
    for flag in (
        "--headless=new",
        "--window-size=1280,2000",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()
    shutil.rmtree(profile, ignore_errors=True)


def sign_in(browser, stack, key_name: str = "OPERATOR_KEY") -> WebDriverWait:
    """Open the dashboard: only the sign-in form shows until a key with monitoring:read is given."""
    browser.get(stack.url("monitoring", "/dashboard"))
    wait = WebDriverWait(browser, 30, poll_frequency=0.3)
    wait.until(lambda b: b.find_element(By.ID, "signin").is_displayed())
    assert not browser.find_element(By.ID, "board").is_displayed()
    browser.find_element(By.ID, "signin-key").send_keys(stack.credentials.keys[key_name])
    browser.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    return wait


def test_a_key_without_monitoring_read_shows_nothing_but_the_sign_in_form(stack, browser):
    wait = sign_in(browser, stack, "METRICS_KEY")
    wait.until(lambda b: "monitoring:read" in b.find_element(By.ID, "signin-error").text)
    assert not browser.find_element(By.ID, "board").is_displayed()
    assert "order" not in browser.find_element(By.TAG_NAME, "body").text.lower().split("monitor", 1)[1]


def test_hostile_strings_are_shown_as_text_and_never_run(stack, browser):
    hostile = '<img src=x onerror="window.__pwned=1">'
    wait = sign_in(browser, stack)
    wait.until(lambda b: b.find_element(By.ID, "board").is_displayed())
    field = browser.find_element(By.ID, "flow-order-id")
    field.send_keys(hostile)
    browser.find_element(By.ID, "flow-load").click()
    wait.until(lambda b: hostile in b.find_element(By.ID, "flow-view").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#flow-view img") == []
    assert browser.execute_script("return window.__pwned === undefined")


def test_the_dashboard_shows_health_orders_and_a_flow(stack, place, terminal, browser):
    order_id = place(order_body([("mouse", 1, 29.99)]))["order_id"]
    terminal(order_id)

    wait = sign_in(browser, stack)
    wait.until(lambda b: "order" in b.find_element(By.ID, "service-health").text.lower())
    health = browser.find_element(By.ID, "service-health").text.lower()
    for service in ("order", "payment", "inventory", "notification", "orchestrator", "monitoring"):
        assert service in health
    wait.until(lambda b: order_id in b.find_element(By.ID, "recent-orders").text)
    assert browser.find_element(By.ID, "success-rate").text.strip()
    assert browser.find_element(By.ID, "dlq-count").text.strip()

    field = browser.find_element(By.ID, "flow-order-id")
    field.clear()
    field.send_keys(order_id)
    browser.find_element(By.ID, "flow-load").click()
    wait.until(lambda b: "OrderCompleted" in b.find_element(By.ID, "flow-view").text)
    assert "OrderCreated" in browser.find_element(By.ID, "flow-view").text
    browser.save_screenshot(".local/dashboard.png")
