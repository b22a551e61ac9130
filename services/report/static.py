"""`introspect report RESULTS --out DIR`: the report page and its data as static files, for the
file system or any static server.

The data are JavaScript files that hand their JSON to the page (`introspectReport.receive(key,
{...})`), loaded by `<script>` tags: a browser refuses `fetch` of `file://` addresses, and a
script tag works from both. The layout:

    index.html                                the page (its CSS and JavaScript inline)
    data.js                                   the comparison table, the figures' list
    figures/<name>.png
    records/<n>/<filter>/page-<p>.js          PAGE_SIZE rows of the list view, with the total
    records/<n>/rows/chunk-<c>.js             every field of CHUNK rows, by position in the file

(`<n>` is the experiment's row number in the table.) A search in the static report looks in
the rows of the page shown: a server-side search over every row is the aggregator's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .data import FILTERS, LIST_COLUMNS, PAGE_SIZE, RecordsReader, draw_figures, experiments_of, records_path, table
from .page import page_html

CHUNK = 50  # full rows per file: what one opened transcript costs to load


def _write(path: Path, key: str, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # `</` never reaches the page inside a string: the file is a script
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    path.write_text(f"introspectReport.receive({json.dumps(key)},{text});\n", encoding="utf-8")


def write_report(results_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write the report of `results_dir` into `out_dir`; the number of experiments and pages."""
    experiments, notes = experiments_of(results_dir)
    rows = table(experiments)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure_dir = out_dir / "figures"
    if figure_dir.exists():
        shutil.rmtree(figure_dir)
    figure_dir.mkdir()
    drawn, figure_note = draw_figures(results_dir, figure_dir / "drawn")
    figures = []
    for figure in drawn:
        shutil.copyfile(figure.png, figure_dir / f"{figure.name}.png")
        figures.append({"name": figure.name, "title": figure.title, "src": f"figures/{figure.name}.png"})
    shutil.rmtree(figure_dir / "drawn", ignore_errors=True)

    by_name = {experiment.name: experiment for experiment in experiments}
    records_dir = out_dir / "records"
    if records_dir.exists():
        shutil.rmtree(records_dir)
    pages = 0
    for row in rows:
        parquet = records_path(by_name[row["name"]], results_dir)
        if not parquet.is_file():
            row["records"] = None
            continue
        reader = RecordsReader(parquet, row["task"])
        row["records"] = reader.counts()
        pages += _write_records(reader, records_dir / str(row["number"]))
    data = {"mode": "static", "source": str(results_dir), "experiments": rows, "jobs": None,
            "figures": figures, "figures_note": figure_note, "notes": notes, "filters": list(FILTERS),
            "page_size": PAGE_SIZE, "chunk": CHUNK}  # fmt: skip
    _write(out_dir / "data.js", "data", data)
    (out_dir / "index.html").write_text(page_html("static"), encoding="utf-8")
    return {"experiments": len(rows), "pages": pages}


def _write_records(reader: RecordsReader, folder: Path) -> int:
    pages = 0
    counts = reader.counts()
    for row_filter, selected in reader.positions.items():
        positions = [int(p) for p in selected]
        for number, offset in enumerate(range(0, max(len(positions), 1), PAGE_SIZE)):
            chosen = positions[offset : offset + PAGE_SIZE]
            page = {"total": len(positions), "offset": offset, "limit": PAGE_SIZE,
                    "rows": reader.rows_at(chosen, LIST_COLUMNS), "counts": counts}  # fmt: skip
            key = f"records/{folder.name}/{row_filter}/page-{number}"
            _write(folder / row_filter / f"page-{number}.js", key, page)
            pages += 1
    # Every field, a row group at a time, cut into chunks by position.
    chunk: list[dict[str, Any]] = []
    written = 0

    def flush(rows: list[dict[str, Any]]) -> None:
        _write(folder / "rows" / f"chunk-{written}.js", f"records/{folder.name}/rows/chunk-{written}", rows)

    for group in range(reader.file.num_row_groups):
        start = reader.group_starts[group]
        chunk.extend(reader.rows_at(range(start, start + reader.file.metadata.row_group(group).num_rows), None))
        while len(chunk) >= CHUNK:
            flush(chunk[:CHUNK])
            chunk, written = chunk[CHUNK:], written + 1
    if chunk:
        flush(chunk)
    return pages
