"""The aggregator's report routes: `/report` (the page), `/report/data` (the comparison table,
the jobs' progress, the figures' list), `/report/records` (a page of an experiment's records,
filtered and searched), `/report/record` (one transcript), `/report/figures/<name>.png`.

They are behind the API's bearer token when one is set. A browser cannot send that header
when it opens a page, so the token is also taken from a cookie that `/report/login` sets
(HttpOnly, SameSite=Strict, for /report only) after a form asks for it.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..compare import Experiment
from ..runtime.access import bearer_token_required
from .data import (
    FILTERS,
    PAGE_SIZE,
    Figure,
    Records,
    ReportError,
    draw_figures,
    experiments_of,
    records_path,
    table,
)
from .page import page_html

COOKIE = "introspect_report"
_LOGIN = """<!doctype html><meta charset="utf-8"><title>Introspect report</title>
<form method="post" action="/report/login" style="font: 16px sans-serif; margin: 4em auto; max-width: 30em">
<p>This report needs the API's token (INTROSPECT_API_TOKEN).</p>
<input type="password" name="token" autofocus style="width: 100%"> <button>Open the report</button></form>
"""


class ReportRoutes:
    """The report of the results folder an aggregator writes, with its jobs' progress."""

    def __init__(self, results_dir: Path, jobs: Callable[[], list[dict[str, Any]]], token: str | None) -> None:
        self.results_dir, self.jobs, self.token = results_dir, jobs, token
        self.records = Records()
        self._listing: tuple[tuple[tuple[str, int], ...], list[Experiment], list[str]] | None = None
        self._figures: tuple[tuple[tuple[str, int], ...], list[Figure], str | None] | None = None
        self._figure_dir: Path | None = None
        self._drawing = asyncio.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/report", self._guarded(self._page, page=True)),
            web.post("/report/login", self._login),
            web.get("/report/data", self._guarded(self._data)),
            web.get("/report/records", self._guarded(self._records)),
            web.get("/report/record", self._guarded(self._record)),
            web.get("/report/figures/{name}.png", self._guarded(self._figure)),
        ]

    # -- the token --

    def _guarded(self, route: Callable[[web.Request], Any], page: bool = False) -> Callable[[web.Request], Any]:
        # A person at a browser opening the page is asked for the token.
        login = (lambda: web.Response(status=401, text=_LOGIN, content_type="text/html")) if page else None
        return bearer_token_required(self.token, cookie=COOKIE, refusal=login)(route)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        given = str((await request.post()).get("token", ""))
        if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.Response(status=401, text=_LOGIN, content_type="text/html")
        response = web.Response(status=303, headers={"Location": "/report"})
        response.set_cookie(COOKIE, self.token, path="/report", httponly=True, samesite="Strict")
        return response

    # -- the experiments and figures, read again when the folder changes --

    def _fingerprint(self) -> tuple[tuple[str, int], ...]:
        try:
            entries = list(os.scandir(self.results_dir))
        except FileNotFoundError:
            return ()
        return tuple(sorted((e.name, e.stat().st_mtime_ns) for e in entries if e.name.endswith(".json")))

    def _experiments(self) -> tuple[list[Experiment], list[str]]:
        fingerprint = self._fingerprint()
        if self._listing is None or self._listing[0] != fingerprint:
            experiments, notes = experiments_of(self.results_dir)
            self._listing = (fingerprint, experiments, notes)
        return self._listing[1], self._listing[2]

    def _experiment(self, name: str) -> Experiment:
        for experiment in self._experiments()[0]:
            if experiment.name == name:
                return experiment
        raise web.HTTPNotFound(text=f"no experiment {name!r}\n")

    async def _drawn(self) -> tuple[list[Figure], str | None]:
        async with self._drawing:  # one drawing at a time; the page asks again when it reloads
            fingerprint = self._fingerprint()
            if self._figures is None or self._figures[0] != fingerprint:
                if self._figure_dir is None:
                    self._figure_dir = Path(tempfile.mkdtemp(prefix="introspect-figures-"))
                drawn, note = await asyncio.to_thread(draw_figures, self.results_dir, self._figure_dir)
                self._figures = (fingerprint, drawn, note)
            return self._figures[1], self._figures[2]

    # -- the routes --

    async def _page(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text=page_html("live"), content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _data(self, _: web.Request) -> web.StreamResponse:
        experiments, notes = await asyncio.to_thread(self._experiments)
        rows = await asyncio.to_thread(table, experiments)
        drawn, figures_note = await self._drawn()
        figures = [{"name": f.name, "title": f.title, "src": f"figures/{f.name}.png"} for f in drawn]
        data = {"mode": "live", "source": str(self.results_dir), "experiments": rows, "jobs": self.jobs(),
                "figures": figures, "figures_note": figures_note, "notes": notes, "filters": list(FILTERS),
                "page_size": PAGE_SIZE}  # fmt: skip
        return web.json_response(data)

    async def _records(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        try:
            offset, limit = int(query.get("offset", "0")), int(query.get("limit", str(PAGE_SIZE)))
        except ValueError:
            raise web.HTTPBadRequest(text="offset and limit are whole numbers\n") from None
        experiment = self._experiment(query.get("experiment", ""))

        def read() -> dict[str, Any]:
            reader = self.records.reader(experiment, records_path(experiment, self.results_dir))
            return self.records.page(reader, query.get("filter", "all"), query.get("q", ""), offset, limit).as_json()

        try:
            return web.json_response(await asyncio.to_thread(read))
        except ReportError as error:
            raise web.HTTPBadRequest(text=f"{error}\n") from None

    async def _record(self, request: web.Request) -> web.StreamResponse:
        experiment = self._experiment(request.query.get("experiment", ""))
        try:
            position = int(request.query.get("position", ""))
        except ValueError:
            raise web.HTTPBadRequest(text="position is a whole number\n") from None

        def read() -> dict[str, Any]:
            reader = self.records.reader(experiment, records_path(experiment, self.results_dir))
            if not 0 <= position < reader.rows:
                raise ReportError(f"no row {position}: the records hold {reader.rows}")
            (row,) = reader.rows_at([position], None)
            return row

        try:
            return web.json_response(await asyncio.to_thread(read))
        except ReportError as error:
            raise web.HTTPNotFound(text=f"{error}\n") from None

    async def _figure(self, request: web.Request) -> web.StreamResponse:
        drawn, _ = self._figures[1:] if self._figures is not None else ([], None)
        for figure in drawn:
            if figure.name == request.match_info["name"]:
                return web.FileResponse(figure.png)
        raise web.HTTPNotFound(text="no such figure\n")


def report_routes(results_dir: Path, jobs: Callable[[], list[dict[str, Any]]], token: str | None) -> list[web.RouteDef]:
    """The report's routes, for the aggregator's `routes()`."""
    return ReportRoutes(results_dir, jobs, token).routes()
