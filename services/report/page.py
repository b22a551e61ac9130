"""The report page: page.html with its style.css and report.js put inline, so that it is one
file, served by the aggregator and written by `introspect report` alike."""

from __future__ import annotations

import json
from importlib import resources


def _text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def page_html(mode: str) -> str:
    """The page, for `live` (the aggregator's routes) or `static` (files beside it)."""
    return (
        _text("page.html")
        .replace("/*STYLE*/", _text("style.css"))
        .replace("/*MODE*/", f"window.INTROSPECT_REPORT_MODE = {json.dumps(mode)};")
        .replace("/*SCRIPT*/", _text("report.js"))
    )
