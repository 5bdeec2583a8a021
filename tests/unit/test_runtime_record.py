"""Unit tests for ketch.runtime.record, the dataclass replacement of the runtime."""

import pytest

from ketch.runtime.record import Factory, Record


class _Point(Record):
    x: int
    y: int = 0
    tags: list[str] = Factory(list)


class _Outer(Record):
    inner: _Point
    points: list[_Point] = Factory(list)


def test_record_positional_and_defaults():
    point = _Point(3)
    assert point.x == 3
    assert point.y == 0
    assert point.tags == []


def test_record_factory_fresh_per_instance():
    first = _Point(1)
    first.tags.append("a")
    assert _Point(1).tags == []


def test_record_keywords():
    point = _Point(y=2, x=1, tags=["a"])
    assert (point.x, point.y, point.tags) == (1, 2, ["a"])


def test_record_missing_argument():
    with pytest.raises(TypeError, match="missing required argument 'x'"):
        _Point()


def test_record_unknown_keyword():
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        _Point(1, z=2)


def test_record_duplicate_argument():
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        _Point(1, x=2)


def test_record_too_many_positionals():
    with pytest.raises(TypeError, match="takes 3 positional arguments but 4 were given"):
        _Point(1, 2, [], 4)


def test_record_equality():
    assert _Point(1, 2) == _Point(1, 2)
    assert _Point(1, 2) != _Point(1, 3)


def test_record_unhashable():
    with pytest.raises(TypeError):
        hash(_Point(1))


def test_record_repr():
    assert repr(_Point(1, 2)) == "_Point(x=1, y=2, tags=[])"


def test_record_as_dict_nested():
    outer = _Outer(_Point(1), [_Point(2, tags=["t"])])
    assert outer.as_dict() == {
        "inner": {"x": 1, "y": 0, "tags": []},
        "points": [{"x": 2, "y": 0, "tags": ["t"]}],
    }


def test_record_replace():
    point = _Point(1, 2)
    changed = point.replace(y=5)
    assert (changed.x, changed.y) == (1, 5)
    assert point.y == 2
