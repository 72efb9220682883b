"""Every input format becomes Rows, streamed, with stable ids and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from runner.errors import DatasetError
from runner.pipeline.dataset import RowSource, check_columns, is_dataset_file, iter_records


def rows(data: object, limit: int | None = None) -> list:
    return list(RowSource(iter_records(data), limit=limit))


def test_target_is_split_off_and_ids_are_content_hashes() -> None:
    got = rows([{"q": "a", "target": "A"}, {"q": "b"}])
    assert got[0].inputs == {"q": "a"} and got[0].target == "A"
    assert got[1].target is None
    assert got[0].id != got[1].id and len(got[0].id) == 16


def test_ids_are_stable_under_reordering_and_duplicates_get_suffixes() -> None:
    a = rows([{"q": "1"}, {"q": "2"}, {"q": "1"}])
    b = rows([{"q": "2"}, {"q": "1"}, {"q": "1"}])
    assert {r.id for r in a} == {r.id for r in b}
    assert a[2].id == a[0].id + "-2"


def test_id_column_is_the_row_id() -> None:
    got = rows([{"id": 7, "q": "a"}])
    assert got[0].id == "7" and got[0].inputs == {"id": 7, "q": "a"}


def test_limit() -> None:
    assert len(rows([{"q": i} for i in range(10)], limit=3)) == 3


def test_csv_jsonl_json_and_dataframe(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("q,target\nx,X\ny,Y\n")
    (tmp_path / "a.jsonl").write_text('{"q": "x", "target": "X"}\n\n{"q": "y", "target": "Y"}\n')
    (tmp_path / "a.json").write_text(json.dumps({"rows": [{"q": "x", "target": "X"}, {"q": "y", "target": "Y"}]}))
    df = pd.DataFrame([{"q": "x", "target": "X"}, {"q": "y", "target": "Y"}])
    for data in (tmp_path / "a.csv", str(tmp_path / "a.jsonl"), tmp_path / "a.json", df):
        got = rows(data)
        assert [(r.inputs, r.target) for r in got] == [({"q": "x"}, "X"), ({"q": "y"}, "Y")]


def test_jsonl_is_streamed(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"q": i}) + "\n" for i in range(1000)) + "not json\n")
    it = iter(RowSource(iter_records(path)))
    assert next(it).inputs == {"q": 0}  # the bad last line is not read yet
    with pytest.raises(DatasetError, match=r"big.jsonl:1001: not valid JSON"):
        list(it)


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('{"q": 1}\n[1, 2]\n', ".jsonl", "must be a JSON object"),
        ("q,q\n1,2\n", ".csv", "duplicate column"),
        ("q\n1,2\n", ".csv", "more values than columns"),
        ('{"a": 1}', ".json", "list of objects"),
        ("[1]", ".json", "expected an object"),
        ("x", ".txt", "suffix"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        rows(path)


def test_missing_file_and_bad_types() -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        rows("nope.csv")
    with pytest.raises(DatasetError, match="every row must be a dict"):
        rows([1, 2])
    with pytest.raises(DatasetError, match="single dict"):
        rows({"q": 1})
    with pytest.raises(DatasetError, match="cannot read data of type int"):
        rows(3)


def test_is_dataset_file() -> None:
    assert is_dataset_file("x.csv") and is_dataset_file(Path("x")) and is_dataset_file("dir/x")
    assert not is_dataset_file("my dataset")


def test_check_columns() -> None:
    def f(question: str, context: str | None = None) -> str:
        return question

    assert check_columns(f, ["question"], "f")({"question": "a"}) == {"question": "a"}
    with pytest.raises(DatasetError, match=r"column 'extra' is not a parameter of f"):
        check_columns(f, ["question", "extra"], "f")
    with pytest.raises(DatasetError, match="needs parameter 'question'"):
        check_columns(f, ["context"], "f")
    # an `id` column is the row id; it is passed only to functions that take it
    assert check_columns(f, ["id", "question"], "f")({"id": 1, "question": "a"}) == {"question": "a"}

    def kw(**kwargs: object) -> None:
        return None

    assert check_columns(kw, ["anything"], "kw")({"anything": 1}) == {"anything": 1}
