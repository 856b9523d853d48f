"""report.html in a real headless Chromium (Debian's chromium + chromium-driver, via selenium),
opened from disk as a reader opens it: filters against an independent recount of the results
files, images that draw, the card a `compare` link points at, no console error, no network.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from once import built_once
from reportruns import mixed_run, recount, shared_sample_run
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

FILTERS = ("filter-file", "filter-modality", "filter-task", "filter-verdict", "filter-source")


@pytest.fixture(scope="session")  # built once per worker, not again when its module resumes
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromedriver are missing: `make test` installs them (as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


@pytest.fixture(scope="session")  # built once per session (tests/once.py), read by every worker
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, "mixed", mixed_run) / "out" / "mixed"


def open_page(chrome: webdriver.Chrome, page: Path, fragment: str = "") -> None:
    chrome.get(page.resolve().as_uri() + fragment)
    WebDriverWait(chrome, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    chrome.get_log("browser")  # start each check with an empty console


def count(chrome: webdriver.Chrome) -> int:
    return int(chrome.find_element(By.ID, "match-count").text)


def choose(chrome: webdriver.Chrome, **values: str) -> int:
    """Set the filters (by id, '_' for '-') to `values`, the others to all; return the count."""
    for name in FILTERS:
        Select(chrome.find_element(By.ID, name)).select_by_value(
            values.get(name.replace("-", "_"), "")
        )
    return count(chrome)


def assert_quiet(chrome: webdriver.Chrome) -> None:
    """No console message at warning level or above; nothing fetched but from disk."""
    errors = [e for e in chrome.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    urls: list[str] = chrome.execute_script(
        "return performance.getEntries().map((e) => e.name).filter((n) => n.includes(':'))"
    )
    assert urls, "no resource entries at all"
    assert all(u.startswith(("file:", "data:")) for u in urls), urls


def visible_thumbnails(chrome: webdriver.Chrome) -> list[Any]:
    """Scroll to the cards; return the thumbnails then in the window."""
    chrome.execute_script("document.getElementById('cards').scrollIntoView()")
    shown: list[Any] = chrome.execute_script(
        "return [...document.querySelectorAll('.card .thumb img')].filter((i) => {"
        "  const r = i.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; })"
    )
    return shown


def test_every_filter_value_matches_a_recount_of_the_results(browser, mixed: Path) -> None:
    rows = recount(mixed)
    open_page(browser, mixed / "report.html")
    assert count(browser) == len(rows)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".card[data-key]")) == min(40, len(rows))
    for name in FILTERS:
        expected = Counter(r[name] for r in rows)
        options = Select(browser.find_element(By.ID, name)).options
        offered = {str(o.get_attribute("value")) for o in options} - {""}
        assert set(expected) <= offered, name
        for value in offered:
            assert choose(browser, **{name.replace("-", "_"): value}) == expected[value], (
                name,
                value,
            )
    verdicts = Counter(r["filter-verdict"] for r in rows)
    assert {"right", "wrong", "failed", "unread", "report"} <= set(verdicts)
    assert_quiet(browser)


def test_filters_combine_and_the_search_finds_text(browser, mixed: Path) -> None:
    rows = recount(mixed)
    open_page(browser, mixed / "report.html")
    some = next(r for r in rows if r["filter-verdict"] == "wrong")
    want = {k: some[k] for k in ("filter-file", "filter-modality", "filter-verdict")}
    expected = sum(all(r[k] == v for k, v in want.items()) for r in rows)
    got = choose(browser, filter_file=some["filter-file"], filter_modality=some["filter-modality"],
                 filter_verdict="wrong")  # fmt: skip
    assert got == expected
    shown = browser.find_elements(By.CSS_SELECTOR, ".card")
    assert shown
    assert {c.get_attribute("data-verdict") for c in shown} == {"wrong"}
    assert {c.get_attribute("data-file") for c in shown} == {some["filter-file"]}
    choose(browser)
    search = browser.find_element(By.ID, "search")
    search.send_keys("(ITEM 7)")  # one question's text, in another case
    assert count(browser) == sum("(item 7)" in r["text"] for r in rows) == 1
    search.clear()
    search.send_keys("I think it is the liver")  # the unreadable replies
    assert count(browser) == sum("I think it is the liver" in r["text"] for r in rows) > 1
    assert_quiet(browser)


def test_thumbnails_and_the_image_as_sent_draw(browser, mixed: Path) -> None:
    open_page(browser, mixed / "report.html")
    shown = visible_thumbnails(browser)
    assert shown
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return arguments[0].every((i) => i.complete)", shown)
    )
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in shown)
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) <= 256 for i in shown)
    shown[0].click()
    big = browser.find_element(By.CSS_SELECTOR, "#lightbox.open img")
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return arguments[0].complete", big)
    )
    assert browser.execute_script("return arguments[0].naturalWidth", big) > 0
    assert "as sent to the model" in browser.find_element(By.ID, "lightbox-caption").text
    failed = next(
        c
        for c in browser.find_elements(By.CSS_SELECTOR, ".card")
        if c.get_attribute("data-verdict") == "failed"
    )
    assert "image not found" in failed.text
    assert_quiet(browser)


def test_a_compare_link_scrolls_to_and_highlights_its_card(browser, mixed: Path) -> None:
    rows = recount(mixed)
    last = rows[-1]  # far below the first page of cards
    card_id = f"row-{last['filter-file']}-{last['key']}"
    open_page(browser, mixed / "report.html", "#" + quote(card_id))
    card = browser.find_element(By.ID, card_id)
    assert card.get_attribute("data-key") == last["key"]
    assert "hit" in card.get_attribute("class").split()
    assert browser.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight",
        card,
    )
    # A filter that hides the row: following a link to it still shows it.
    first = rows[0]
    choose(browser, filter_file=first["filter-file"])
    first_id = f"row-{first['filter-file']}-{first['key']}"
    browser.execute_script("location.hash = arguments[0]", quote(first_id))
    browser.execute_script("location.hash = arguments[0]", quote(card_id))
    WebDriverWait(browser, 5).until(
        lambda d: "hit" in d.find_element(By.ID, card_id).get_attribute("class")
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, ".card.hit")) == 1
    assert_quiet(browser)


def test_the_demo_page_works_offline(browser, tmp_path_factory) -> None:
    run = shared_sample_run(tmp_path_factory)
    rows = recount(run)
    open_page(browser, run / "report.html")
    assert count(browser) == len(rows) > 0
    assert browser.find_elements(By.CSS_SELECTOR, "#headline li")
    assert browser.find_elements(By.CSS_SELECTOR, "table.heat td")
    plots = browser.find_elements(By.CSS_SELECTOR, "#plots img")
    assert len(plots) == 3
    assert all(browser.execute_script("return arguments[0].naturalWidth", p) > 0 for p in plots)
    shown = visible_thumbnails(browser)
    assert shown
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return arguments[0].every((i) => i.naturalWidth > 0)", shown)
    )
    assert_quiet(browser)
