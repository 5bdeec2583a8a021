"""The Go template evaluator behind ``--format``, and the table and JSON forms."""

from __future__ import annotations

import pytest

from ketch.cli.formatter import render, render_inspect
from ketch.cli.ps import HEADERS as PS_HEADERS
from ketch.cli.ps import ContainerRow, HeaderRow
from ketch.cli.template import Template, TemplateError
from ketch.cli.template_functions import go_sprintf

ITEM = {
    "Id": "abc123",
    "Names": ["web", "api"],
    "Labels": {"tier": "front", "app": "shop"},
    "State": {"Status": "running", "Pid": 42, "Running": True},
    "Empty": [],
    "Null": None,
    "Ratio": 1.5,
}

CASES = [
    ("{{.Id}}", "abc123"),
    ("{{.State.Status}}", "running"),
    ("{{.State.Pid}}", "42"),
    ("{{.Missing}}", "<no value>"),
    ("{{.Null}}", "<nil>"),
    ("{{.Ratio}}", "1.5"),
    ("{{.Names}}", "[web api]"),
    ("{{.Labels}}", "map[app:shop tier:front]"),
    ("{{json .Names}}", '["web","api"]'),
    ("{{json .State}}", '{"Status":"running","Pid":42,"Running":true}'),
    ("{{range .Names}}<{{.}}>{{end}}", "<web><api>"),
    ("{{range $i, $n := .Names}}{{if $i}},{{end}}{{$n}}{{end}}", "web,api"),
    ("{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}", "app=shop;tier=front;"),
    ("{{range .Empty}}x{{else}}none{{end}}", "none"),
    ('{{range .Names}}{{if eq . "web"}}{{continue}}{{end}}{{.}}{{end}}', "api"),
    ("{{range .Names}}{{.}}{{break}}{{end}}", "web"),
    ('{{index .Labels "tier"}}', "front"),
    ("{{index .Names 1}}", "api"),
    ('{{join .Names ", "}}', "web, api"),
    ("{{lower .State.Status | upper}}", "RUNNING"),
    ('{{title "hello world"}}', "Hello World"),
    ('{{split "a:b" ":"}}', "[a b]"),
    ('{{printf "%-8s|%3d|%q" .Id .State.Pid .Id}}', 'abc123  | 42|"abc123"'),
    ('{{if eq .State.Status "running"}}up{{else}}down{{end}}', "up"),
    ("{{if .Null}}a{{else if .Id}}b{{else}}c{{end}}", "b"),
    ("{{if and .Id (not .Null)}}yes{{end}}", "yes"),
    ("{{or .Null .Id}}", "abc123"),
    ("{{with .State}}{{.Pid}}{{end}}", "42"),
    ("{{$x := .Id}}{{$x}}", "abc123"),
    ("{{len .Names}}", "2"),
    ("{{gt .State.Pid 40}}", "true"),
    ("{{(index .Names 0)}}", "web"),
    ("{{truncate .Id 3}}", "abc"),
    ("a {{- /* comment */ -}} b", "ab"),
    ("{{- .Id -}}  \n", "abc123"),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_template_cases(source: str, expected: str) -> None:
    assert Template(source).execute(ITEM) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{.Id", "unclosed action"),
        ("{{nope .Id}}", 'function "nope" not defined'),
        ("{{if .Id}}x", "missing {{end}}"),
        ("{{end}}", 'unexpected "{{end}}"'),
        ("{{(.Id}}", "unclosed left paren"),
    ],
)
def test_template_parse_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as raised:
        Template(source)
    assert message in str(raised.value)


def test_template_field_of_string_fails() -> None:
    with pytest.raises(TemplateError) as raised:
        Template("{{.Id.Foo}}").execute(ITEM)
    assert "can't evaluate field Foo" in str(raised.value)


def test_template_index_out_of_range() -> None:
    with pytest.raises(TemplateError) as raised:
        Template("{{index .Names 5}}").execute(ITEM)
    assert "index out of range: 5" in str(raised.value)


def test_sprintf_missing_and_extra() -> None:
    assert go_sprintf("%s %s", "a") == "a %!s(MISSING)"
    assert go_sprintf("%d%%", 5) == "5%"


CONTAINER = {
    "Id": "f" * 64,
    "Names": ["/web"],
    "Image": "busybox",
    "Command": "sleep 100",
    "Created": 1_700_000_000,
    "State": "running",
    "Status": "Up 3 seconds",
    "Labels": {"tier": "front"},
    "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "IP": "0.0.0.0", "Type": "tcp"}],
}


def render_ps(format_text: str) -> str:
    rows = [ContainerRow(CONTAINER, 1_700_000_100.0)]
    return render(format_text, "{{.ID}}\t{{.Names}}", HeaderRow(PS_HEADERS), rows)


def test_format_plain_template() -> None:
    assert render_ps("{{.ID}} {{.Names}}") == "ffffffffffff web\n"


def test_format_table_has_header() -> None:
    lines = render_ps("table {{.Names}}\\t{{.Ports}}").splitlines()
    assert lines == ["NAMES     PORTS", "web       0.0.0.0:8080->80/tcp"]


def test_format_table_default() -> None:
    assert render_ps("table").splitlines()[0] == "CONTAINER ID   NAMES"


def test_format_json_keys() -> None:
    import json

    decoded = json.loads(render_ps("json"))
    assert decoded["Names"] == "web"
    assert decoded["Ports"] == "0.0.0.0:8080->80/tcp"
    assert decoded["RunningFor"] == "About a minute ago"


def test_format_method_with_argument() -> None:
    assert render_ps('{{.Label "tier"}}') == "front\n"


def test_format_table_header_of_method() -> None:
    assert render_ps('table {{.Label "tier"}}').splitlines() == ["LABEL", "front"]


def test_format_unknown_field_fails() -> None:
    with pytest.raises(TemplateError) as raised:
        render_ps("{{.Nope}}")
    assert "can't evaluate field Nope" in str(raised.value)


def test_inspect_default_is_indented_json() -> None:
    assert render_inspect("", [{"Id": "x"}]) == '[\n    {\n        "Id": "x"\n    }\n]\n'


def test_inspect_template_per_item() -> None:
    assert render_inspect("{{.Id}}", [{"Id": "x"}, {"Id": "y"}]) == "x\ny\n"
