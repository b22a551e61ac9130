"""The dataset loaders on the shipped fixtures (each in its source's raw format)."""

from __future__ import annotations

import json
import tarfile

import datasets
import pandas as pd
import pytest

from services import datasets as dataset_loading
from services.core.datasets import DATASETS, UnknownDataset, parse_babi
from services.core.observations import (
    EntailmentObservation,
    InvalidObservation,
    MultiChoiceObservation,
    SentimentObservation,
)
from services.datasets import (
    MIRROR_ENV,
    SOURCE_LABEL_NAMES,
    DatasetLoadError,
    LocalFileDataset,
    check_local_file,
    load_split,
)
from tests.conftest import DATASET_MIRROR


def _raw_rows(*parts: str) -> list[dict]:
    path = DATASET_MIRROR.joinpath(*parts)
    return [json.loads(line) for line in path.read_text().splitlines()]


def _load(name: str, split: str, seed: int = 0):
    return load_split(name, split, seed=seed, mirror=DATASET_MIRROR)


@pytest.mark.parametrize("name", list(DATASETS))
def test_splits_partition_the_source_and_idx_counts_rows_before_shuffling(name: str) -> None:
    train, valid, test = (_load(name, split) for split in ("train", "valid", "test"))
    for split in (train, valid, test):
        assert split, f"{name} has an empty split"
        assert sorted(o.idx for o in split) == list(range(len(split)))
        assert all(o.category == DATASETS[name].category for o in split)
    if DATASETS[name].splits["valid"] == "train[80%:]":
        # train[:80%] and train[80%:] together are the whole source train split, without overlap.
        assert len(train) == round(0.8 * (len(train) + len(valid)))
        assert not {o.paragraph for o in train} & {o.paragraph for o in valid} or name.startswith("bAbI")


@pytest.mark.parametrize("name", list(DATASETS))
def test_shuffling_is_seeded_and_changes_only_the_order(name: str) -> None:
    first, again, other = _load(name, "test", seed=0), _load(name, "test", seed=0), _load(name, "test", seed=1)
    assert first == again
    assert sorted(first, key=lambda o: o.idx) == sorted(other, key=lambda o: o.idx)
    assert [o.idx for o in first] != [o.idx for o in other]


def test_imdb_labels_and_line_breaks() -> None:
    raw = _raw_rows("stanfordnlp", "imdb", "plain_text", "test.jsonl")
    test = sorted(_load("IMDB", "test"), key=lambda o: o.idx)
    assert all(isinstance(o, SentimentObservation) for o in test)
    assert [o.label for o in test] == [("negative", "positive")[r["label"]] for r in raw]
    assert [o.text for o in test] == [r["text"].replace("<br />", "\n") for r in raw]
    assert {o.label for o in _load("IMDB", "train")} == {"negative", "positive"}
    with_breaks = next(o for o in _load("IMDB", "train") + _load("IMDB", "valid") if "\n" in o.text)
    assert "<br />" not in with_breaks.text


def test_sst2_uses_glue_validation_as_test() -> None:
    raw = _raw_rows("nyu-mll", "glue", "sst2", "validation.jsonl")
    test = sorted(_load("SST2", "test"), key=lambda o: o.idx)
    assert [(o.text, o.label) for o in test] == [(r["sentence"], ("negative", "positive")[r["label"]]) for r in raw]


def test_rte_maps_entailment_to_yes_and_no() -> None:
    raw = _raw_rows("nyu-mll", "glue", "rte", "validation.jsonl")
    test = sorted(_load("RTE", "test"), key=lambda o: o.idx)
    assert all(isinstance(o, EntailmentObservation) for o in test)
    assert [(o.paragraph, o.hypothesis, o.label) for o in test] == [
        (r["sentence1"], r["sentence2"], ("yes", "no")[r["label"]]) for r in raw
    ]


def test_mctest_restructures_story_choices_and_label() -> None:
    raw = _raw_rows("sagnikrayc", "mctest", "mc500", "test.jsonl")
    test = sorted(_load("MCTest", "test"), key=lambda o: o.idx)
    assert all(isinstance(o, MultiChoiceObservation) for o in test)
    for observation, row in zip(test, raw, strict=True):
        assert observation.paragraph == row["story"].replace("\\newline", "\n")
        assert "\\newline" not in observation.paragraph
        assert observation.question == row["question"]
        assert list(observation.choices) == sorted(row["answer_options"].values())
        assert observation.label == row["answer_options"][row["answer"]]


# What each dataset asks the Hub for: id, config, revision. None of these can be fetched here;
# README says which were checked against the Hub itself.
HUB_SOURCES = {
    "IMDB": ("stanfordnlp/imdb", "plain_text", None),
    "SST2": ("nyu-mll/glue", "sst2", None),
    "RTE": ("nyu-mll/glue", "rte", None),
    # a loading script: its Parquet conversion, in the config the paper got by default
    "MCTest": ("sagnikrayc/mctest", "mc500", "refs/convert/parquet"),
}


@pytest.mark.parametrize("name", HUB_SOURCES)
def test_without_a_mirror_each_split_is_asked_of_the_hub(monkeypatch, name: str) -> None:
    """The exact call to `datasets.load_dataset`, answered here with the mirror's rows in the
    source's own schema, as the Hub's files would be."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    source, config, revision = HUB_SOURCES[name]
    from_mirror = _load(name, "test")
    calls: list[tuple] = []

    def hub(path: str, config_name: str | None = None, *, revision: str | None = None, split: str) -> object:
        calls.append((path, config_name, revision, split))
        source_split = split.partition("[")[0]
        rows = _raw_rows(*path.split("/"), config_name or "", f"{source_split}.jsonl")
        return _as_the_hub_serves(rows, path, config_name)

    monkeypatch.setattr(datasets, "load_dataset", hub)
    from_hub = {split: load_split(name, split) for split in ("train", "valid", "test")}
    assert calls == [(source, config, revision, DATASETS[name].splits[split]) for split in ("train", "valid", "test")]
    assert from_hub["test"] == from_mirror


def _as_the_hub_serves(rows: list[dict], source: str, config: str | None) -> datasets.Dataset:
    """A Dataset of `rows`, its label a ClassLabel as on the Hub."""
    table = datasets.Dataset.from_list(rows)
    names = SOURCE_LABEL_NAMES.get((source, config))
    return table if names is None else table.cast_column("label", datasets.ClassLabel(names=list(names)))


MIRRORED = [(name, split) for name in ("IMDB", "SST2", "RTE", "MCTest") for split in ("train", "valid", "test")]


@pytest.mark.parametrize(("name", "split"), MIRRORED)
def test_a_mirror_read_without_datasets_gives_what_datasets_gives(name: str, split: str) -> None:
    """The plain reader against `datasets.load_dataset("json", ...)` on the same files, with
    the same split selection: the same rows, in the same order."""
    definition = DATASETS[name]
    folder = DATASET_MIRROR / definition.source / (definition.source_config or "default")
    files = {path.stem: str(path) for path in folder.glob("*.jsonl")}
    selection = definition.split_selection(split)
    by_datasets = datasets.load_dataset("json", data_files=files, split=selection)
    names = SOURCE_LABEL_NAMES.get((definition.source, definition.source_config))
    if names is not None:
        by_datasets = by_datasets.cast_column("label", datasets.ClassLabel(names=list(names)))
    expected = dataset_loading._hub_rows(by_datasets)
    assert dataset_loading._load_mirror(definition, selection, DATASET_MIRROR) == expected


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 19, 20, 21, 33, 99, 101, 997])
def test_split_arithmetic_is_datasets_read_instruction(size: int) -> None:
    rows = [{"i": i} for i in range(size)]
    for spec in ("train", "train[:80%]", "train[80%:]", "train[10%:35%]", "train[-30%:]", "train[3:7]", "train[:-2]"):
        bounds = datasets.ReadInstruction.from_spec(spec).to_absolute({"train": size})
        expected = [row for b in bounds for row in rows[b.from_ : b.to]]
        assert dataset_loading.select_rows(spec, {"train": rows}) == expected, spec


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1])
def test_the_seeded_order_is_datasets_shuffle(seed: int) -> None:
    for size in (0, 1, 2, 20, 101, 1000):
        by_datasets = datasets.Dataset.from_dict({"i": list(range(size))}).shuffle(seed=seed)["i"]
        assert dataset_loading.shuffled(list(range(size)), seed) == by_datasets  # type: ignore[arg-type]


def test_a_mirror_label_that_is_not_a_class_is_named(tmp_path) -> None:
    folder = tmp_path / "nyu-mll" / "glue" / "rte"
    folder.mkdir(parents=True)
    (folder / "validation.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "label": 7, "idx": 0}\n')
    with pytest.raises(DatasetLoadError, match=r"validation.jsonl: row 1 has the label 7, not one of entailment"):
        load_split("RTE", "test", mirror=tmp_path)
    (folder / "validation.jsonl").write_text("not json\n")
    with pytest.raises(DatasetLoadError, match=r"validation.jsonl: line 1 is not JSON"):
        load_split("RTE", "test", mirror=tmp_path)


def test_a_hub_failure_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)

    def offline(*args: object, **kwargs: object) -> object:
        raise ConnectionError("no route to the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetLoadError, match=r"could not load MCTest \(sagnikrayc/mctest\): no route") as failed:
        load_split("MCTest", "test")
    assert str(failed.value).endswith("point --mirror (or INTROSPECT_DATASETS_DIR) at copies of its files")


@pytest.mark.parametrize("name", ["bAbI-1", "bAbI-2", "bAbI-3"])
def test_babi_observations_come_from_the_archive(name: str) -> None:
    for observation in _load(name, "train") + _load(name, "test"):
        assert observation.label in observation.choices
        assert list(observation.choices) == sorted(set(observation.choices))
        assert observation.question.endswith("?")
        assert observation.paragraph.endswith(".")


def test_babi_parser_builds_stories_paragraphs_and_choices() -> None:
    lines = [
        "1 Mary moved to the bathroom.",
        "2 John went to the hallway.",
        "3 Where is Mary? \tbathroom\t1",
        "4 Mary travelled to the office.",
        "5 Where is Mary? \toffice\t4",
        "1 Sandra journeyed to the garden.",
        "2 Where is Sandra? \tgarden\t1",
    ]
    assert parse_babi(lines) == [
        {
            "paragraph": "Mary moved to the bathroom. Then, John went to the hallway.",
            "question": "Where is Mary?",
            "label": "bathroom",
            "choices": ["bathroom", "office"],
        },
        {
            "paragraph": (
                "Mary moved to the bathroom. Then, John went to the hallway. Then, Mary travelled to the office."
            ),
            "question": "Where is Mary?",
            "label": "office",
            "choices": ["bathroom", "office"],
        },
        {
            "paragraph": "Sandra journeyed to the garden.",
            "question": "Where is Sandra?",
            "label": "garden",
            "choices": ["garden"],
        },
    ]
    with pytest.raises(ValueError, match="line 1 does not start with a line number"):
        parse_babi(["Mary moved."])


def test_a_broken_babi_archive_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "babi").mkdir()
    with tarfile.open(tmp_path / "babi" / "tasks_1-20_v1-2.tar.gz", "w:gz"):
        pass
    with pytest.raises(DatasetLoadError, match="has no file tasks_1-20_v1-2/en-10k/qa1"):
        load_split("bAbI-1", "test", mirror=tmp_path)
    with pytest.raises(DatasetLoadError, match="no bAbI archive"):
        load_split("bAbI-1", "test", mirror=tmp_path / "elsewhere")


def test_unknown_datasets_splits_and_missing_mirrors_are_clear_errors(tmp_path) -> None:
    with pytest.raises(UnknownDataset, match="unknown dataset 'IMDb2'"):
        load_split("IMDb2", "test")
    with pytest.raises(UnknownDataset, match="has no split 'dev'"):
        load_split("IMDB", "dev", mirror=DATASET_MIRROR)
    with pytest.raises(DatasetLoadError, match="no mirror of RTE"):
        load_split("RTE", "test", mirror=tmp_path)
    assert len(load_split("imdb", "test", mirror=DATASET_MIRROR)) == 20  # names are case-insensitive


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_local_file_with_a_column_mapping(tmp_path, suffix: str) -> None:
    frame = pd.DataFrame({"review": ["Loved it.", "Hated it.", "Fine."], "stars": [5, 1, 5], "extra": ["x", "y", "z"]})
    path = tmp_path / f"reviews{suffix}"
    {".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     ".csv": lambda: frame.to_csv(path, index=False),
     ".parquet": lambda: frame.to_parquet(path, index=False)}[suffix]()  # fmt: skip

    dataset = LocalFileDataset(
        path, "sentiment", {"text": "review", "label": "stars"}, {"5": "positive", "1": "negative"}
    )
    observations = sorted(load_split(dataset, "test", seed=0), key=lambda o: o.idx)
    assert observations == [
        SentimentObservation(0, "positive", "Loved it."),
        SentimentObservation(1, "negative", "Hated it."),
        SentimentObservation(2, "positive", "Fine."),
    ]


def test_a_local_multi_choice_file_keeps_its_choices(tmp_path) -> None:
    path = tmp_path / "quiz.jsonl"
    rows = [
        {
            "paragraph": "Tom is in the kitchen.",
            "question": "Where is Tom?",
            "choices": ["garden", "kitchen"],
            "label": "kitchen",
        }
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (observation,) = load_split(LocalFileDataset(path, "multi-choice"), "test")
    assert observation == MultiChoiceObservation(
        0, "kitchen", "Tom is in the kitchen.", "Where is Tom?", ("garden", "kitchen")
    )


def test_local_file_mistakes_name_the_problem(tmp_path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "Good.", "label": "great"}) + "\n")
    with pytest.raises(InvalidObservation, match="field 'label' must be one of"):
        load_split(LocalFileDataset(path, "sentiment"), "test")
    with pytest.raises(InvalidObservation, match="no column 'review'"):
        load_split(LocalFileDataset(path, "sentiment", {"text": "review"}), "test")
    with pytest.raises(DatasetLoadError, match="no such file"):
        load_split(LocalFileDataset(tmp_path / "missing.jsonl", "sentiment"), "test")
    with pytest.raises(DatasetLoadError, match=r"unsupported file type '\.txt'"):
        (tmp_path / "data.txt").write_text("x")
        load_split(LocalFileDataset(tmp_path / "data.txt", "sentiment"), "test")
    with pytest.raises(UnknownDataset, match="unknown category 'poetry'"):
        load_split(LocalFileDataset(path, "poetry"), "test")


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path) -> None:
    """What Excel saves as "CSV UTF-8" starts with a byte-order mark; the check reads it as the loader does."""
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nGood,positive\n")
    dataset = LocalFileDataset(path, "sentiment")
    check_local_file(dataset)
    assert load_split(dataset, "test") == [SentimentObservation(0, "positive", "Good")]


@pytest.mark.parametrize("seed", [0, 7, 2**31 - 1])
def test_the_order_held_in_32_bits_is_the_paper_s_permutation(seed: int) -> None:
    import numpy as np

    for size in (0, 1, 1000, 100_003):
        order = dataset_loading.seeded_order(size, seed)
        assert order.itemsize == 4 and (order == np.random.default_rng(seed).permutation(size)).all()


def test_a_csv_read_row_by_row_is_the_csv_read_whole(tmp_path) -> None:
    """Rows found by where they start, then read on their own: CRLF and lone CR line ends,
    a byte-order mark, blank lines and quoted values across lines give what `csv.DictReader`
    gives over the whole text (with Python's universal newlines, as the file was read before)."""
    import csv
    import io

    data = b'\xef\xbb\xbftext,label\r\n"Two\r\nlines",positive\r\n\r\nPlain,negative\rLast,"posi\ntive"'
    path = tmp_path / "mixed.csv"
    path.write_bytes(data)
    whole = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    count, fetch = dataset_loading._index_csv(path)
    assert count == len(whole) == 3
    assert fetch([2, 0, 1]) == [whole[2], whole[0], whole[1]]


def test_a_file_is_judged_as_if_read_whole_first(tmp_path) -> None:
    """Read as a stream, a file still names its mistakes in the order reading it whole did:
    bytes that are not UTF-8 anywhere, then a line that does not parse, then a row that does
    not fit, however early the later kinds come."""
    path = tmp_path / "data.jsonl"
    rows = [b'{"text": "Good", "label": "meh"}', b"not json", b'{"text": "Caf\xe9", "label": "positive"}']
    dataset = LocalFileDataset(path, "sentiment")
    path.write_bytes(b"\n".join(rows) + b"\n")
    offset = (b"\n".join(rows)).index(b"\xe9")
    with pytest.raises(DatasetLoadError, match=rf"is not UTF-8 text \(byte 0xe9 at offset {offset}\)"):
        check_local_file(dataset)
    path.write_bytes(b"\n".join(rows[:2]) + b"\n")
    with pytest.raises(DatasetLoadError, match="line 2 is not JSON"):
        check_local_file(dataset)
    path.write_bytes(rows[0] + b"\n")
    with pytest.raises(InvalidObservation, match="row 1: field 'label' must be one of"):
        check_local_file(dataset)


def test_a_mirror_that_is_not_utf8_is_named_with_the_whole_file_s_position(tmp_path) -> None:
    folder = tmp_path / "nyu-mll" / "glue" / "rte"
    folder.mkdir(parents=True)
    row = b'{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0}\n'
    (folder / "validation.jsonl").write_bytes(row + b'{"sentence1": "\xff"}\n')
    with pytest.raises(DatasetLoadError, match=rf"can't decode byte 0xff in position {len(row) + 15}: invalid start"):
        load_split("RTE", "test", mirror=tmp_path)
