"""A small base class for the runtime's plain data records, in place of dataclasses.

Every ``ketch-runc create`` pays for what it imports, and importing :mod:`dataclasses`
(which imports :mod:`inspect`) and generating the methods of each decorated class cost
more than parsing a config.json. A :class:`Record` subclass lists its fields as class
annotations, in order, as a dataclass does. A class attribute is that field's default,
and a :class:`Factory` attribute makes a fresh default per instance (like
``field(default_factory=...)``). The methods are shared, not generated per class::

    class User(Record):
        uid: int = 0
        additional_gids: list[int] = Factory(list)

    User(uid=1000) == User(1000, [])    # True
    user.as_dict()                       # {"uid": 1000, "additional_gids": []}
    user.replace(uid=0)                  # a copy with uid changed
"""

from __future__ import annotations

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Factory:
    """A field default made fresh for each instance by calling ``make``."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


_MISSING = object()


class Record:
    """Fields from the class annotations, with __init__, __eq__, __repr__ and as_dict."""

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    _factories: dict[str, Callable[[], Any]] = {}

    def __init_subclass__(cls) -> None:
        own = tuple(cls.__dict__.get("__annotations__", {}))
        cls._fields = cls._fields + tuple(name for name in own if name not in cls._fields)
        defaults = dict(cls._defaults)
        factories = dict(cls._factories)
        for name in own:
            default = cls.__dict__.get(name, _MISSING)
            if isinstance(default, Factory):
                factories[name] = default.make
                delattr(cls, name)
            elif default is not _MISSING:
                defaults[name] = default
        cls._defaults = defaults
        cls._factories = factories

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if len(args) > len(cls._fields):
            raise TypeError(
                f"{cls.__name__}() takes {len(cls._fields)} positional arguments"
                f" but {len(args)} were given"
            )
        values = dict(zip(cls._fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in cls._fields:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
            if name in values:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            values[name] = value
        for name in cls._fields:
            if name in values:
                setattr(self, name, values[name])
            elif name in cls._factories:
                setattr(self, name, cls._factories[name]())
            elif name in cls._defaults:
                # Stored on the instance too, so that vars() and __dict__ show every field.
                setattr(self, name, cls._defaults[name])
            else:
                raise TypeError(f"{cls.__name__}() missing required argument {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields)

    # Records are mutable and compare by value, so they are unhashable, as dataclasses are.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({values})"

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a dict, converting nested records, lists and dicts too."""
        return {name: _plain(getattr(self, name)) for name in self._fields}

    def replace(self, **changes: Any) -> Any:
        """Return a copy with the given fields changed."""
        values = {name: getattr(self, name) for name in self._fields}
        values.update(changes)
        return type(self)(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.as_dict()
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
