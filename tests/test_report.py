"""report.html, rendered by headless Chromium: the table and every figure section are there."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import yaml
from conftest import REPO

from workflow_scripts.lineage import Lineage

pytestmark = pytest.mark.e2e


def demo_config() -> dict:
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "demo/config.yaml").read_text()))
    return config


PROTOCOLS = list(demo_config()["evaluate"]["protocols"])
SECTIONS = {
    "1. Results": [
        "summary tables per protocol",
        "nDCG@10 per split and protocol",
        "paired tests between models",
        *[f"nDCG@10 with intervals: {p}" for p in PROTOCOLS],
    ],
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
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1500,1000",
    ):
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


def open_result(driver, report, label: str) -> None:
    """Open one result of "1. Results" (its eye icon), as a reader would."""
    from selenium.webdriver.common.by import By

    open_category(driver, report, "1. Results")
    row = driver.find_element(By.XPATH, f"//td[text()='{label}']/..")
    row.find_element(By.XPATH, ".//a[@iconname='eye']").click()
    time.sleep(1.5)


def page_tables(driver) -> dict[str, list[str]]:
    """Every table of the opened HTML result (in its iframe): id -> row texts; also the
    class of each cell, as ``<id>:classes``."""
    from selenium.webdriver.common.by import By

    driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))
    tables = {}
    for t in driver.find_elements(By.TAG_NAME, "table"):
        tables[t.get_attribute("id")] = [tr.text for tr in t.find_elements(By.TAG_NAME, "tr")]
        tables[t.get_attribute("id") + ":classes"] = [
            td.get_attribute("class") or "" for td in t.find_elements(By.TAG_NAME, "td")
        ]
    tables["paragraphs"] = [p.get_attribute("id") + "|" + p.text for p in driver.find_elements(By.TAG_NAME, "p")]
    driver.switch_to.default_content()
    return tables


def test_summary_table_is_in_the_rendered_page(browser, demo_run):
    from selenium.webdriver.common.by import By

    open_result(browser, demo_run / "report.html", "summary tables per protocol")
    tables = page_tables(browser)
    models = Lineage(demo_config()).evaluated()
    seed_rows = 2 * len(Lineage(demo_config()).seed_groups())  # mean and std per seed group
    rows = tables["summary-table-card"]
    assert any(r.startswith("stage2") for r in rows) and any(r.startswith("card:") for r in rows)
    # header, ours, the seeds' mean and std, the card and its v0.1 (the card's protocol), delta
    assert len(rows) == 1 + len(models) + seed_rows + 2 + 1
    assert len(tables["summary-table-bright"]) == 1 + len(models) + seed_rows  # no published row was measured that way
    summary = json.loads((demo_run / "results/demo/summary.json").read_text())
    (check,) = next(t for t in summary["tables"] if t["protocol"]["name"] == "card")["card_checks"]
    assert f"agreement-card|{check['sentence']}" in tables["paragraphs"]  # the sentence under the card table
    assert not [p for p in tables["paragraphs"] if p.startswith("agreement-") and not p.startswith("agreement-card|")]
    assert {f"summary-table-{p}" for p in ("gpt4_reason", "long", "mteb-v1.1", "mteb-v1.1-prompt")} < set(tables)
    browser.save_screenshot(str(demo_run / "report-summary.png"))
    assert (demo_run / "report-summary.png").stat().st_size > 10_000
    assert browser.find_elements(By.TAG_NAME, "iframe")


def test_paired_tests_table_marks_the_significant_cells(browser, demo_run):
    open_result(browser, demo_run / "report.html", "paired tests between models")
    tables = page_tables(browser)
    summary = json.loads((demo_run / "results/demo/summary.json").read_text())
    pairs = Lineage(demo_config()).pairs()
    for table in summary["tables"]:
        name = table["protocol"]["name"]
        rows = tables[f"tests-table-{name}"]
        assert [r.split(" ")[0:3] for r in rows[1:]] == [[m, "-", b] for m, b in pairs]
        classes = tables[f"tests-table-{name}:classes"]
        significant = sum(t["significant"] for t in table["tests"])
        assert classes.count("sig") == significant, name  # every significant cell marked, no other
        assert sum(r.count("*") for r in rows) == significant
    assert any(t["significant"] for table in summary["tables"] for t in table["tests"])  # the check is not vacuous


def test_each_protocols_interval_figure_is_rendered(browser, demo_run):
    import matplotlib.image
    from selenium.webdriver.common.by import By

    for protocol in PROTOCOLS:
        open_result(browser, demo_run / "report.html", f"nDCG@10 with intervals: {protocol}")
        image = browser.find_element(By.CSS_SELECTOR, "div.p-3 > img")
        width, height = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
        png = matplotlib.image.imread(demo_run / f"results/demo/report/intervals/{protocol}.png")
        assert (height, width) == png.shape[:2], protocol  # the figure itself, decoded by the browser


def test_a_missing_section_fails(browser, demo_run, tmp_path):
    """The check above is not vacuous: a report without the training curves is caught."""
    broken = tmp_path / "report.html"
    html = (demo_run / "report.html").read_text()
    broken.write_text(html.replace('"4. Training"', '"4. Trainin"'))
    open_category(browser, broken, "1. Results")
    from selenium.common.exceptions import NoSuchElementException

    with pytest.raises(NoSuchElementException):
        open_category(browser, broken, "4. Training")
