"""Commit's --change instructions applied to a container config."""

from __future__ import annotations

import pytest

from ketch.engine.images import apply_changes
from ketch.errors import InvalidArgument


def test_changes_cmd_exec_form() -> None:
    assert apply_changes({}, ['CMD ["echo", "hi"]'])["Cmd"] == ["echo", "hi"]


def test_changes_cmd_shell_form() -> None:
    assert apply_changes({}, ["CMD echo hi"])["Cmd"] == ["/bin/sh", "-c", "echo hi"]


def test_changes_env_appends() -> None:
    config = apply_changes({"Env": ["A=1"]}, ["ENV B=2 C='x y'"])
    assert config["Env"] == ["A=1", "B=2", "C=x y"]


def test_changes_label_merges() -> None:
    config = apply_changes({"Labels": {"a": "1"}}, ["LABEL b=2"])
    assert config["Labels"] == {"a": "1", "b": "2"}


def test_changes_expose_default_tcp() -> None:
    config = apply_changes({}, ["EXPOSE 80 53/udp"])
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}


def test_changes_workdir_and_user() -> None:
    config = apply_changes({}, ["WORKDIR /srv", "user nobody"])
    assert config["WorkingDir"] == "/srv"
    assert config["User"] == "nobody"


def test_changes_leave_input_alone() -> None:
    original = {"Env": ["A=1"]}
    apply_changes(original, ["ENV B=2"])
    assert original == {"Env": ["A=1"]}


@pytest.mark.parametrize("change", ["RUN echo hi", "CMD", "ENV novalue"])
def test_changes_invalid(change: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid change"):
        apply_changes({}, [change])
