"""A person's own data file, wrong in each way people get it wrong: one line naming the file,
the row and the fix, exit code 2, and nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import main

LABELS = ["--label", "5=positive", "--label", "1=negative"]

CASES = [
    ("empty.csv", b"", [], "{path} is empty"),
    ("header.csv", b"text,label\n", [], "{path} has a header but no rows"),
    ("latin.csv", b"text,label\nCaf\xe9 au lait,5\n", [],
     "{path} is not UTF-8 text (byte 0xe9 at offset 14); save it as UTF-8"),
    ("stars.csv", b"text,label\nGood,5\nBad,1\nSo-so,3\n", [],
     "{path}: row 3: field 'label' must be one of ('negative', 'positive'), got '3'; map it with --label 3=LABEL"),
    ("columns.jsonl", b'{"review": "Good", "label": 5}\n', [],
     "{path}: row 1 has no column 'text' (for text); its columns are review, label; "
     "name one with --column text=COLUMN"),
    ("broken.jsonl", b'{"text": "Good", "label": 5}\n{"text": \n', [], "{path}: line 2 is not JSON ("),
    ("numbers.jsonl", b'{"text": "Good", "label": 5}\n5\n', [],
     "{path}: line 2 is not a JSON object (one row per line)"),
    ("notes.txt", b"Good\n", [], "notes.txt: unsupported file type '.txt'; use .jsonl, .json, .csv, .parquet"),
    ("missing.csv", None, [], "no such file: {path}"),
]  # fmt: skip


@pytest.mark.parametrize("command", ["evaluate", "run"])
@pytest.mark.parametrize(("name", "content", "extra", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_data_file_is_one_line_before_anything_starts(
    tmp_path: Path, capsys, command: str, name: str, content: bytes | None, extra: list[str], message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    argv = [command, "--dataset", str(path) if name != "notes.txt" else name, "--category", "sentiment",
            "--task", "classify", *LABELS, *extra, "--out", str(tmp_path / "out")]  # fmt: skip
    if command == "run":
        argv += ["--data-dir", str(tmp_path / "d")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("introspect: error: " + message.format(path=path))
    assert not (tmp_path / "d").exists()  # no pipeline was started for it
