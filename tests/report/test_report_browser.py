"""The report page in a real headless browser: Debian's chromium, driven through Debian's
chromedriver by Selenium (Selenium Manager kept offline: nothing is downloaded). The page is
served by the aggregator's own routes, and as the static files of `introspect report`; the
results folder is made by `introspect evaluate` runs against the stand-in."""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiohttp import web

from services.aggregator.service import Aggregator
from services.cli import main
from services.compare import experiment_rows, load_folder
from tests.conftest import DATASET_MIRROR

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]
# Where the screenshot goes: a file of the test's own, unless INTROSPECT_REPORT_SCREENSHOT names
# one (`INTROSPECT_REPORT_SCREENSHOT=docs/report.png` takes the README's anew); a test run
# never rewrites a file of the repository by itself.
SCREENSHOT_ENV = "INTROSPECT_REPORT_SCREENSHOT"
WAIT = 60  # seconds: a ceiling on a condition, never a measured time (the machine is shared)
# (model, task, options): the README's comparison, on the IMDB sample's 20 observations
EXPERIMENTS = [
    ("llama2-7b", "counterfactual", []), ("llama2-7b", "counterfactual", ["e-persona-you"]),
    ("llama2-7b", "redacted", []), ("falcon-7b", "counterfactual", []), ("llama2-7b", "classify", []),
]  # fmt: skip
COUNTERFACTUAL = "analysis_m-llama2-7b_y-none_d-imdb_p-test_t-counterfactual_c-_s-0"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    for model, task, options in EXPERIMENTS:
        argv = ["evaluate", "--model", model, "--dataset", "IMDB", "--task", task, "--mirror", str(DATASET_MIRROR),
                "--out", str(out), *(f"--config={option}" for option in options)]  # fmt: skip
        assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def aggregator_url(results_dir: Path) -> Iterator[str]:
    """The aggregator's routes (`/jobs`, `/report`...) on a real HTTP server, in a thread."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.add_routes(Aggregator(results_dir.parent / "data", results_dir=results_dir).routes())
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=WAIT)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=WAIT)


@pytest.fixture(scope="module")
def static_report(results_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """`introspect report --out DIR`, and its address on a plain static server."""
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(results_dir), "--out", str(out)]) == 0
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield out, f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    thread.join(timeout=WAIT)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "apt-get install chromium chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    )
    yield driver
    driver.quit()


def _wait(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(condition)


def _css(driver: Any, selector: str) -> list[Any]:
    return driver.find_elements("css selector", selector)


# The list is drawn again with each page: read it, and click in it, in one script, never
# through element handles that the next drawing leaves stale.
def _statuses(driver: Any) -> list[str]:
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#records tr.record')].map(tr => tr.dataset.status)"
        )
    )


def _idxs(driver: Any) -> list[int]:
    return [int(i) for i in driver.execute_script(
        "return [...document.querySelectorAll('#records tr.record')].map(tr => tr.dataset.idx)")]  # fmt: skip


def _click(driver: Any, selector: str) -> None:
    assert driver.execute_script("const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e;",
                                 selector), selector  # fmt: skip


def _records(name: str, results_dir: Path) -> list[dict[str, Any]]:
    return pq.read_table(results_dir / f"{name}.parquet").to_pylist()


def _status(record: dict[str, Any]) -> str:
    if record["error"] is not None:
        return "error"
    if record["correct"] is None or ("faithful" in record and record["faithful"] is None):
        return "missmatch"
    if not record["correct"]:
        return "incorrect"
    return "correct" if "faithful" not in record else ("faithful" if record["faithful"] else "unfaithful")


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1")


def _choose(driver: Any, name: str, expected: list[int]) -> None:
    _click(driver, f'#comparison tr.experiment[data-name="{name}"]')
    shown = "const list = document.getElementById('records'); return !list.dataset.loading && list.dataset.experiment"
    _wait(driver, lambda d: d.execute_script(shown) == name and _idxs(d) == expected)


def _filter(driver: Any, name: str, expected: list[int]) -> None:
    _click(driver, f'button.filter[data-filter="{name}"]')
    _wait(driver, lambda d: _idxs(d) == expected and _statuses(d) and d.execute_script(
        "return document.querySelector('button.filter.active').dataset.filter") == name)  # fmt: skip


def _check_table(driver: Any, results_dir: Path) -> None:
    expected = experiment_rows(load_folder(results_dir)[0])
    rows = _css(driver, "#comparison tbody tr.experiment")
    assert [row.get_attribute("data-name") for row in rows] == [row.name for row in expected]
    for shown, row in zip(rows, expected, strict=True):
        cells = [cell.text for cell in shown.find_elements("tag name", "td")]
        assert cells[:5] == [str(row.number), row.dataset, row.split, row.task, row.model]
        assert cells[10].endswith(f"{row.accuracy.successes}/{row.accuracy.n}")


def _check_transcript(driver: Any, record: dict[str, Any]) -> None:
    _click(driver, f'#records tr.record[data-idx="{record["idx"]}"]')
    _wait(driver, lambda d: _css(d, f'#records tr.record.selected[data-idx="{record["idx"]}"]')
          and d.find_element("id", "transcript").get_attribute("data-position") is not None)  # fmt: skip
    for field in ("predict_prompt", "predict_answer", "explain_prompt", "explain_answer", "explain_predict_prompt",
                  "explain_predict_answer"):  # fmt: skip
        (shown,) = _css(driver, f'#transcript pre[data-field="{field}"]')
        assert shown.get_attribute("textContent") == record[field], field


def _unique_text(records: list[dict[str, Any]]) -> tuple[str, int]:
    """A piece of one record's explanation that no other record holds."""
    for record in records:
        text = (record.get("explain_answer") or "")[:40]
        if len(text) > 15 and sum(text.lower() in str(r).lower() for r in records) == 1:
            return text, record["idx"]
    raise AssertionError("no record has a text of its own")


def test_the_aggregators_report_page(browser, aggregator_url: str, results_dir: Path, tmp_path: Path) -> None:
    records = _records(COUNTERFACTUAL, results_dir)
    _open(browser, f"{aggregator_url}/report?rows=5")
    _check_table(browser, results_dir)
    _choose(browser, COUNTERFACTUAL, [r["idx"] for r in records[:5]])
    assert browser.find_element("id", "page-info").text == f"1–5 of {len(records)}"
    _click(browser, "#next")  # paging moves on
    _wait(browser, lambda d: _idxs(d) == [r["idx"] for r in records[5:10]])
    assert browser.find_element("id", "page-info").text == f"6–10 of {len(records)}"
    unfaithful = [r for r in records if _status(r) == "unfaithful"]
    assert unfaithful, "the stand-in's answers hold an unfaithful explanation"
    _filter(browser, "unfaithful", [r["idx"] for r in unfaithful[:5]])  # a filter starts at its first page
    assert set(_statuses(browser)) == {"unfaithful"}
    _check_transcript(browser, unfaithful[0])

    text, idx = _unique_text(records)
    _filter(browser, "all", [r["idx"] for r in records[:5]])
    search = browser.find_element("id", "search")
    search.clear()
    search.send_keys(text.upper())  # case-blind
    _click(browser, "#search-button")
    _wait(browser, lambda d: _idxs(d) == [idx])

    # The screenshot in the README: every unfaithful answer of an experiment, one transcript open.
    _open(browser, f"{aggregator_url}/report")
    _choose(browser, COUNTERFACTUAL, [r["idx"] for r in records])
    _filter(browser, "unfaithful", [r["idx"] for r in unfaithful])
    _check_transcript(browser, unfaithful[0])
    browser.execute_script("document.getElementById('experiments-section').scrollIntoView()")
    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "report.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000


@pytest.mark.parametrize("where", ["static server", "file system"])
def test_the_static_report_page(browser, static_report: tuple[Path, str], results_dir: Path, where: str) -> None:
    folder, url = static_report
    # From the disk, a browser refuses fetch(): the data come in by script tags.
    _open(browser, url if where == "static server" else (folder / "index.html").as_uri())
    _check_table(browser, results_dir)
    records = _records(COUNTERFACTUAL, results_dir)
    _choose(browser, COUNTERFACTUAL, [r["idx"] for r in records])  # one page of 50 holds all 20
    unfaithful = [r for r in records if _status(r) == "unfaithful"]
    _filter(browser, "unfaithful", [r["idx"] for r in unfaithful])
    _check_transcript(browser, unfaithful[-1])
    text, idx = _unique_text(records)
    _filter(browser, "all", [r["idx"] for r in records])
    browser.find_element("id", "search").send_keys(text)
    _click(browser, "#search-button")
    _wait(browser, lambda d: _idxs(d) == [idx])
    assert "static report searches the page shown" in browser.find_element("id", "search-scope").text
