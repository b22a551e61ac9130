"""The report's data routes and static files, without a browser: paging bounds, filters,
search, the token, and 25,000 records served a page at a time."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import services
from services.aggregator.service import Aggregator
from services.cli import main
from services.report.routes import ReportRoutes
from services.report.static import CHUNK
from tests.conftest import DATASET_MIRROR

EXPERIMENT = "analysis_m-llama2-7b_y-none_d-imdb_p-test_t-counterfactual_c-_s-0"
ROWS = 25_000
NEEDLE = "zebra-needle"  # in the explanation of exactly one row
TOKEN = "s3cret-token"


def _status_of(i: int) -> str:
    return ["error", "missmatch", "incorrect", "incorrect", "faithful", "faithful", "faithful", "unfaithful",
            "unfaithful", "unfaithful"][i % 10]  # fmt: skip


def _synthetic(i: int) -> dict[str, Any]:
    status = _status_of(i)
    correct = {"error": None, "missmatch": None, "incorrect": False}.get(status, True)
    faithful = {"faithful": True, "unfaithful": False}.get(status, None if status in ("error", "missmatch") else False)
    explained = f"Paragraph {i}, edited." + (f" {NEEDLE}" if i == 12_345 else "")
    return {"idx": i, "label": "positive", "predict_prompt": f"Is review {i} positive?", "predict_answer": "Positive.",
            "predict": None if status in ("error", "missmatch") else "positive", "correct": correct, "duration": 0.0,
            "error": "422: too long" if status == "error" else None, "explain_prompt": f"Edit review {i}.",
            "explain_answer": explained, "explain": explained, "explain_predict_prompt": f"Is {explained} positive?",
            "explain_predict_answer": "Negative.", "explain_predict": "negative", "faithful": faithful}  # fmt: skip


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A counterfactual experiment's result file, its records replaced by 25,000 synthetic ones
    in row groups of 5,000 (as the aggregator writes them)."""
    out = tmp_path_factory.mktemp("results")
    argv = ["evaluate", "--dataset", "IMDB", "--task", "counterfactual", "--mirror", str(DATASET_MIRROR),
            "--limit", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    parquet = out / f"{EXPERIMENT}.parquet"
    schema = pq.read_schema(parquet)
    table = pa.Table.from_pylist([_synthetic(i) for i in range(ROWS)], schema=schema)
    pq.write_table(table, parquet, row_group_size=5_000)
    return out


@pytest.fixture
async def client(results_dir: Path) -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application()
    app.add_routes(Aggregator(results_dir.parent, results_dir=results_dir).routes())  # the aggregator's own table
    async with TestClient(TestServer(app)) as made:
        yield made


async def _json(client: TestClient[Any, Any], path: str, **query: Any) -> Any:
    response = await client.get(path, params={"experiment": EXPERIMENT, **query})
    assert response.status == 200, await response.text()
    return await response.json()


async def test_the_data_route_has_the_comparison_rows_and_jobs(client) -> None:
    data = await _json(client, "/report/data")
    (row,) = data["experiments"]
    assert (row["name"], row["task"], row["n"]) == (EXPERIMENT, "counterfactual", 2)
    assert row["accuracy"]["text"].endswith(f"{row['accuracy']['successes']}/{row['accuracy']['n']}")
    assert data["jobs"] == [] and data["filters"][0] == "all"


async def test_25000_records_are_served_a_page_at_a_time(client) -> None:
    first = await _json(client, "/report/records", offset=0, limit=50)
    assert first["total"] == ROWS and [row["idx"] for row in first["rows"]] == list(range(50))
    assert "predict_prompt" not in first["rows"][0]  # the list view: no prompts until a transcript opens
    assert len(json.dumps(first)) < 20_000
    assert first["counts"] == {"all": ROWS, "correct": 15_000, "incorrect": 5_000, "faithful": 7_500,
                               "unfaithful": 7_500, "missmatch": 2_500, "error": 2_500}  # fmt: skip
    last = await _json(client, "/report/records", offset=ROWS - 10, limit=50)
    assert [row["idx"] for row in last["rows"]] == list(range(ROWS - 10, ROWS))
    assert (await _json(client, "/report/records", offset=ROWS, limit=50))["rows"] == []
    middle = await _json(client, "/report/records", offset=12_340, limit=200)
    assert [row["idx"] for row in middle["rows"]] == list(range(12_340, 12_540))  # across no row group edge...
    edge = await _json(client, "/report/records", offset=4_990, limit=20)
    assert [row["idx"] for row in edge["rows"]] == list(range(4_990, 5_010))  # ...and across one


@pytest.mark.parametrize("row_filter", ["correct", "incorrect", "faithful", "unfaithful", "missmatch", "error"])
async def test_a_filter_gives_only_its_rows(client, row_filter: str) -> None:
    expected = [i for i in range(ROWS) if _status_of(i) == row_filter or (
        row_filter == "correct" and _status_of(i) in ("faithful", "unfaithful"))]  # fmt: skip
    page = await _json(client, "/report/records", filter=row_filter, offset=100, limit=30)
    assert page["total"] == len(expected)
    assert [row["idx"] for row in page["rows"]] == expected[100:130]
    wanted = {"correct": {"faithful", "unfaithful"}}.get(row_filter, {row_filter})
    assert {row["status"] for row in page["rows"]} <= wanted


async def test_search_finds_a_text_in_any_prompt_or_answer_case_blind(client) -> None:
    page = await _json(client, "/report/records", q=NEEDLE.upper())
    assert page["total"] == 1 and page["rows"][0]["idx"] == 12_345
    assert (await _json(client, "/report/records", q=NEEDLE, filter="unfaithful"))["total"] == 0  # 12345 is faithful
    assert (await _json(client, "/report/records", q=NEEDLE, filter="faithful"))["total"] == 1
    assert (await _json(client, "/report/records", q="review 2499"))["total"] == 1 + 10  # 2499, 24990..24999
    assert (await _json(client, "/report/records", q="no such text anywhere"))["total"] == 0


async def test_a_transcript_is_the_whole_row(client) -> None:
    row = await _json(client, "/report/record", position=12_345)
    assert row == {"position": 12_345, "status": "faithful", **_synthetic(12_345)}


@pytest.mark.parametrize(
    ("query", "status"),
    [({"offset": -1}, 400), ({"limit": 0}, 400), ({"limit": 201}, 400), ({"offset": "x"}, 400),
     ({"filter": "nonsense"}, 400), ({"experiment": "analysis_nothing"}, 404), ({"experiment": "../etc/passwd"}, 404)],
)  # fmt: skip
async def test_bad_requests_are_refused(client, query: dict[str, Any], status: int) -> None:
    response = await client.get("/report/records", params={"experiment": EXPERIMENT, **query})
    assert response.status == status
    assert (await client.get("/report/record", params={"experiment": EXPERIMENT, "position": ROWS})).status == 404


async def test_the_report_is_behind_the_apis_token(results_dir: Path) -> None:
    app = web.Application()
    app.add_routes(Aggregator(results_dir.parent, results_dir=results_dir, api_token=TOKEN).routes())
    async with TestClient(TestServer(app)) as client:
        query = {"experiment": EXPERIMENT, "position": 0}
        for path in ("/report/data", "/report/records", "/report/record", "/report/figures/any.png"):
            assert (await client.get(path, params=query)).status == 401, path
            authorized = await client.get(path, params=query, headers={"Authorization": f"Bearer {TOKEN}"})
            assert authorized.status == (404 if "figures" in path else 200), path
        page = await client.get("/report")
        assert page.status == 401 and 'action="/report/login"' in await page.text()  # a form asks for it
        wrong = await client.post("/report/login", data={"token": "wrong"}, allow_redirects=False)
        assert wrong.status == 401
        right = await client.post("/report/login", data={"token": TOKEN}, allow_redirects=False)
        assert right.status == 303 and "HttpOnly" in right.headers["Set-Cookie"]
        assert (await client.get("/report")).status == 200  # the cookie it set
        assert (await client.get("/report/records", params=query)).status == 200


@pytest.fixture
def fake_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """`services.figures` as the figures' part will have it: paper_figures(results, out) -> files."""
    drawn: list[Any] = []

    def paper_figures(results_dir: Path, out_dir: Path) -> list[Any]:
        out_dir.mkdir(parents=True, exist_ok=True)
        made = []
        for name in drawn:
            (out_dir / f"{name}.png").write_bytes(b"\x89PNG fake " + name.encode())
            made.append(types.SimpleNamespace(name=name, title=f"Title of {name}", png=out_dir / f"{name}.png",
                                              pdf=out_dir / f"{name}.pdf", data=None))  # fmt: skip
        return made

    module = types.ModuleType("services.figures")
    module.paper_figures = paper_figures  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "services.figures", module)
    monkeypatch.setattr(services, "figures", module, raising=False)
    yield drawn


async def test_figures_are_listed_and_served_or_the_page_says_none(results_dir: Path, fake_figures) -> None:
    app = web.Application()
    app.add_routes(ReportRoutes(results_dir, list, None).routes())
    async with TestClient(TestServer(app)) as client:
        data = await (await client.get("/report/data")).json()
        assert data["figures"] == [] and data["figures_note"] == "no figure to draw from these results"
    fake_figures.append("faithfulness")
    app = web.Application()
    app.add_routes(ReportRoutes(results_dir, list, None).routes())
    async with TestClient(TestServer(app)) as client:
        data = await (await client.get("/report/data")).json()
        assert data["figures"] == [{"name": "faithfulness", "title": "Title of faithfulness",
                                    "src": "figures/faithfulness.png"}]  # fmt: skip
        assert await (await client.get("/report/figures/faithfulness.png")).read() == b"\x89PNG fake faithfulness"


def _receive(path: Path) -> tuple[str, Any]:
    """The key and the JSON a static data file hands the page."""
    found = re.fullmatch(r'introspectReport\.receive\(("[^"]*"),(.*)\);\n', path.read_text(encoding="utf-8"), re.S)
    assert found, path
    return json.loads(found.group(1)), json.loads(found.group(2).replace("<\\/", "</"))


def test_the_static_report_writes_pages_of_every_filter_and_rows_in_chunks(results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["report", str(results_dir), "--out", str(out)]) == 0
    assert 'INTROSPECT_REPORT_MODE = "static"' in (out / "index.html").read_text()
    key, data = _receive(out / "data.js")
    assert key == "data" and [row["name"] for row in data["experiments"]] == [EXPERIMENT]
    assert data["figures"] or data["figures_note"]  # the figures, or "no figures" and why
    assert all((out / figure["src"]).is_file() for figure in data["figures"])
    folder = out / "records" / "1"
    key, first = _receive(folder / "unfaithful" / "page-0.js")
    assert key == "records/1/unfaithful/page-0" and first["total"] == 7_500
    assert {row["status"] for row in first["rows"]} == {"unfaithful"} and len(first["rows"]) == data["page_size"]
    pages = sorted(folder.glob("all/page-*.js"))
    assert len(pages) == ROWS // data["page_size"]
    _, last = _receive(folder / "all" / f"page-{len(pages) - 1}.js")
    assert [row["idx"] for row in last["rows"]][-1] == ROWS - 1
    _, chunk = _receive(folder / "rows" / f"chunk-{12_345 // CHUNK}.js")
    assert {"position": 12_345, "status": "faithful", **_synthetic(12_345)} in chunk
    assert len(list(folder.glob("rows/chunk-*.js"))) == ROWS // CHUNK


async def test_the_data_route_has_each_jobs_progress(tmp_path: Path) -> None:
    from services.runtime.memory import MemoryBus
    from tests.aggregator.test_handlers import _manifest, _result

    aggregator, bus = Aggregator(tmp_path), MemoryBus()
    await aggregator.start(bus)
    app = web.Application()
    app.add_routes(aggregator.routes())
    try:
        async with TestClient(TestServer(app)) as client:
            await bus.deliver(aggregator, _manifest("j1", 2))
            await bus.deliver(aggregator, _result("j1", 0))
            (job,) = (await (await client.get("/report/data")).json())["jobs"]
            assert (job["job_id"], job["received"], job["expected"], job["complete"]) == ("j1", 1, 2, False)
            await bus.deliver(aggregator, _result("j1", 1))
            data = await (await client.get("/report/data")).json()
            assert data["jobs"][0]["complete"] and [row["n"] for row in data["experiments"]] == [2]
    finally:
        await aggregator.close()
