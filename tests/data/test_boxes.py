from __future__ import annotations

import json

import numpy as np
import pytest

from medlite.data.base import DataError
from medlite.data.boxes import boxes_for, read_boxes


def test_json_object_list_and_csv_give_the_same_boxes(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"x": [1, 2, 30, 40], "y": [0, 0, 5.5, 6]}))
    (tmp_path / "b.json").write_text(json.dumps([{"name": "x", "box": [1, 2, 30, 40]},
                                                 {"name": "y", "box": [0, 0, 5.5, 6]}]))
    (tmp_path / "c.csv").write_text("name,x0,y0,x1,y1,note\nx,1,2,30,40,a\ny,0,0,5.5,6,b\n")
    want = {"x": [1, 2, 30, 40], "y": [0, 0, 5.5, 6]}
    for f in ("a.json", "b.json", "c.csv"):
        got = read_boxes(tmp_path / f)
        assert {k: v.tolist() for k, v in got.items()} == want, f
        assert all(v.dtype == np.float32 for v in got.values())


def test_a_folder_of_challenge_cases_names_each_box_by_its_label(tmp_path):
    np.savez(tmp_path / "case.npz", imgs=np.zeros((20, 30, 3), np.uint8),
             boxes=np.array([[1, 2, 10, 12], [15, 3, 28, 18]]))
    got = read_boxes(tmp_path)
    assert sorted(got) == ["case#1", "case#2"] and got["case#2"].tolist() == [15, 3, 28, 18]


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("a.json", "{not json", "not a readable JSON file"),
    ("a.json", '{"x": [1, 2, 3]}', "a box is [x0, y0, x1, y1]"),
    ("a.json", '{"x": [5, 2, 3, 9]}', "x1 >= x0"),
    ("a.json", '{"x": ["a", 2, 3, 9]}', "must be numbers"),
    ("a.json", '[{"name": "x"}]', "entry 0 needs 'name' and 'box'"),
    ("a.json", '"x"', "must be an object"),
    ("a.json", "{}", "holds no boxes"),
    ("a.csv", "name,x0,y0\nx,1,2\n", "needs a header"),
    ("a.csv", "name,x0,y0,x1,y1\nx,1,2,nan,4\n", "line 2 ('x'): box coordinates must be finite"),
    ("a.txt", "x 1 2 3 4", "must be a .json or .csv"),
])
def test_bad_boxes_files_are_named_errors(tmp_path, name, content, fragment):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=None) as e:
        read_boxes(tmp_path / name)
    assert fragment in str(e.value) and name in str(e.value)


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such boxes file"):
        read_boxes(tmp_path / "nope.json")
    with pytest.raises(DataError, match="found none"):
        read_boxes(tmp_path)


def test_boxes_for_orders_checks_and_names_what_is_missing():
    boxes = {"a": np.array([0, 0, 9, 9], np.float32), "b": np.array([1, 1, 4, 4], np.float32)}
    got = boxes_for(["b", "a"], [(5, 5), (10, 10)], boxes, "f.json")
    assert [g.tolist() for g in got] == [[1, 1, 4, 4], [0, 0, 9, 9]]
    with pytest.raises(DataError, match=r"f.json: no box for 1 of 2 cases \(c\)"):
        boxes_for(["a", "c"], [(10, 10), (10, 10)], boxes, "f.json")
    with pytest.raises(DataError, match="outside its 5x5 image"):
        boxes_for(["a"], [(5, 5)], boxes, "f.json")
