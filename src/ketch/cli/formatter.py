"""``--format`` for listing commands: docker's ``table``, ``json`` and template forms.

A format is one of:

- empty or ``table``: the command's default table;
- ``json``: each item as one line of JSON (docker 24 and later);
- ``table TEMPLATE``: a header row, then one row per item, columns split at tabs;
- ``TEMPLATE``: one line per item.

As in docker, the two-character sequences ``\\t`` and ``\\n`` in a format are a tab and a
newline, so a shell user can type them. The header of a table comes from running the
template over a map from field name to column title (``{{.ID}}`` prints
``CONTAINER ID``). Columns are laid out as Go's ``tabwriter`` lays out docker's tables:
each cell padded to its column's widest cell plus 3 spaces, and at least 10 wide.
"""

from __future__ import annotations

from ketch.cli.template import Template, TemplateError
from ketch.cli.template_functions import to_json

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Iterable

MIN_COLUMN_WIDTH = 10
COLUMN_PADDING = 3


def expand_escapes(format_text: str) -> str:
    return format_text.replace("\\t", "\t").replace("\\n", "\n")


def render(
    format_text: str, default_table: str, headers: dict[str, str], items: Iterable[object]
) -> str:
    """Render ``items`` (format contexts with ``to_json``) in the requested format."""
    stripped = format_text.strip()
    if stripped == "json":
        return "".join(to_json(item) + "\n" for item in items)
    is_table = not stripped or stripped == "table" or stripped.startswith("table ")
    if not stripped or stripped == "table":
        body = default_table
    elif is_table:
        body = stripped[len("table ") :].strip(" ")
    else:
        body = format_text
    template = compile_template(expand_escapes(body))
    lines = [template.execute(item) + "\n" for item in items]
    if not is_table:
        return "".join(lines)
    header = template.execute(headers) + "\n"
    return tabulate(header + "".join(lines))


def compile_template(source: str) -> Template:
    try:
        return Template(source)
    except TemplateError as error:
        raise TemplateError(f"template parsing error: {error}") from None


def tabulate(text: str) -> str:
    """Align tab-separated cells into columns (Go's tabwriter with docker's settings).

    Only cells followed by a tab count towards a column's width, so a last column of
    free text is never padded, and trailing spaces are kept as tabwriter keeps them.
    """
    rows = [line.split("\t") for line in text.split("\n")]
    if rows and rows[-1] == [""]:
        rows.pop()
    widths: list[int] = []
    for cells in rows:
        for index, cell in enumerate(cells[:-1]):
            if index == len(widths):
                widths.append(MIN_COLUMN_WIDTH)
            widths[index] = max(widths[index], len(cell) + COLUMN_PADDING)
    lines = []
    for cells in rows:
        padded = [cell.ljust(widths[index]) for index, cell in enumerate(cells[:-1])]
        lines.append("".join(padded) + cells[-1])
    return "".join(line + "\n" for line in lines)


def render_inspect(format_text: str, items: list[object]) -> str:
    """Render inspect results: indented JSON by default, else the template per item."""
    if not format_text:
        import json

        return json.dumps(items, indent=4, ensure_ascii=False) + "\n"
    if format_text.strip() == "json":
        return "".join(to_json(item) + "\n" for item in items)
    template = compile_template(expand_escapes(format_text))
    return "".join(template.execute(item) + "\n" for item in items)
