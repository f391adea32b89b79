"""report.html, rendered by headless Chromium: the table and every figure section are there."""

from __future__ import annotations

import shutil
import time

import pytest

pytestmark = pytest.mark.e2e

SECTIONS = {
    "1. Results": ["summary tables per protocol", "nDCG@10 per split and protocol"],
    "2. Data": ["training data", "rows, drops, contamination audit"],
    "3. Model": ["widening verification"],
    "4. Training": ["training curves"],
    "5. Provenance": ["provenance", "cost per job"],
}


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1500,1000"):  # fmt: skip
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def open_category(driver, report, category: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(report.as_uri())
    time.sleep(1)
    driver.find_element(By.XPATH, f"//span[text()='{category}']").click()
    time.sleep(0.5)


def labels_shown(driver) -> set[str]:
    from selenium.webdriver.common.by import By

    return {td.text for td in driver.find_elements(By.XPATH, "//td")}


def test_every_section_is_rendered(browser, demo_run):
    report = demo_run / "report.html"
    for category, labels in SECTIONS.items():
        open_category(browser, report, category)
        missing = set(labels) - labels_shown(browser)
        assert not missing, f"{category}: missing {missing}"


def test_summary_table_is_in_the_rendered_page(browser, demo_run):
    from selenium.webdriver.common.by import By

    open_category(browser, demo_run / "report.html", "1. Results")
    row = browser.find_element(By.XPATH, "//td[text()='summary tables per protocol']/..")
    row.find_element(By.XPATH, ".//a[@iconname='eye']").click()
    time.sleep(1.5)
    browser.switch_to.frame(browser.find_element(By.TAG_NAME, "iframe"))
    tables = {t.get_attribute("id"): [tr.text for tr in t.find_elements(By.TAG_NAME, "tr")]
              for t in browser.find_elements(By.TAG_NAME, "table")}  # fmt: skip
    browser.switch_to.default_content()
    rows = tables["summary-table-card"]
    assert any(r.startswith("stage2") for r in rows) and any(r.startswith("card:") for r in rows)
    assert len(rows) == 1 + 4 + 2 + 1  # header, ours, the card and its v0.1 (the card's protocol), delta
    assert len(tables["summary-table-bright"]) == 1 + 4  # no published row was measured that way
    assert {f"summary-table-{p}" for p in ("gpt4_reason", "long", "mteb-v1.1", "mteb-v1.1-prompt")} < set(tables)
    browser.save_screenshot(str(demo_run / "report-summary.png"))
    assert (demo_run / "report-summary.png").stat().st_size > 10_000


def test_a_missing_section_fails(browser, demo_run, tmp_path):
    """The check above is not vacuous: a report without the training curves is caught."""
    broken = tmp_path / "report.html"
    html = (demo_run / "report.html").read_text()
    broken.write_text(html.replace('"4. Training"', '"4. Trainin"'))
    open_category(browser, broken, "1. Results")
    from selenium.common.exceptions import NoSuchElementException

    with pytest.raises(NoSuchElementException):
        open_category(browser, broken, "4. Training")
