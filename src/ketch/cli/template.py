"""Go ``text/template`` as docker's ``--format`` uses it: parse once, execute per item.

No maintained Python package evaluates Go's template language (Jinja2's syntax and
semantics differ: ``{{ .ID }}`` is not valid Jinja), and users paste the templates from
docker's documentation, so ketch carries this small evaluator of its own.

Supported:

- text and actions, with ``{{-``/``-}}`` trimming and ``{{/* comments */}}``;
- pipelines (``a | b``) and variables (``$x := ...``, ``$x = ...``, ``$``);
- fields and map keys (``.A.B``, ``$x.A``, ``(pipeline).A``), and methods called with
  arguments (``.Label "k"``);
- ``if``/``else if``/``else``, ``with``/``else``, and ``range`` with ``$i, $v :=``,
  ``else``, ``break`` and ``continue``;
- Go's functions ``and or not len index slice print printf println eq ne lt le gt ge
  urlquery`` and docker's ``json join split lower upper title pad truncate``.

Not supported: ``define``, ``template`` and ``block``, which raise TemplateError.

A value is a dict (a JSON object: a missing key gives ``<no value>``, as Go's maps do), a
list, a scalar, or an object whose attributes are the fields (a missing one is an error,
as with Go's structs). ``template_functions`` formats values and defines the functions.
"""

from __future__ import annotations

import json

from ketch.cli.template_functions import (
    FUNCTIONS,
    NO_VALUE_MARKER,
    TemplateError,
    format_value,
    is_true,
)

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable

_MISSING = object()


# -- lexing ---------------------------------------------------------------------------


def _split_actions(source: str) -> list[tuple[str, str]]:
    """Split the source into ("text", ...) and ("action", ...) parts, trimming spaces
    next to ``{{- `` and `` -}}`` and dropping comments."""
    parts: list[tuple[str, str]] = []
    position = 0
    trim_next = False
    while True:
        start = source.find("{{", position)
        text = source[position:] if start < 0 else source[position:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            parts.append(("text", text))
            return parts
        inner_start = start + 2
        if source.startswith("- ", inner_start) or source.startswith("-\n", inner_start):
            text = text.rstrip(" \t\r\n")
            inner_start += 2
        parts.append(("text", text))
        end = _find_action_end(source, inner_start)
        inner = source[inner_start:end]
        trim_next = inner.endswith(" -") or inner.endswith("\n-")
        if trim_next:
            inner = inner[:-2]
        if not inner.strip().startswith("/*"):
            parts.append(("action", inner))
        elif not inner.strip().endswith("*/"):
            raise TemplateError(f"template: unclosed comment in {source!r}")
        position = end + 2


def _find_action_end(source: str, position: int) -> int:
    quote = ""
    while position < len(source):
        char = source[position]
        if quote:
            if char == "\\" and quote == '"':
                position += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif source.startswith("}}", position):
            return position
        position += 1
    raise TemplateError(f"template: unclosed action in {source!r}")


def _tokenize(action: str) -> list[str]:
    """Split an action into tokens: strings, numbers, names, ``(``, ``)``, ``|``, ``:=``."""
    tokens: list[str] = []
    position = 0
    while position < len(action):
        char = action[position]
        if char.isspace():
            position += 1
        elif char in "()|,":
            tokens.append(char)
            position += 1
        elif action.startswith(":=", position):
            tokens.append(":=")
            position += 2
        elif char == "=":
            tokens.append("=")
            position += 1
        elif char in "\"'`":
            end = _find_closing_quote(action, position)
            tokens.append(action[position : end + 1])
            position = end + 1
        else:
            end = position
            while end < len(action) and not action[end].isspace() and action[end] not in "()|,=":
                end += 1
            if action.startswith(":=", end - 1) and end - 1 > position:
                end -= 1
            tokens.append(action[position:end])
            position = end
    return tokens


def _find_closing_quote(action: str, start: int) -> int:
    quote = action[start]
    position = start + 1
    while position < len(action):
        if action[position] == "\\" and quote != "`":
            position += 2
            continue
        if action[position] == quote:
            return position
        position += 1
    raise TemplateError(f"template: unterminated quoted string in {action!r}")


# -- parsing --------------------------------------------------------------------------
# Nodes are tuples: ("text", str), ("action", pipeline), ("if"|"with", pipeline, body,
# else_body), ("range", pipeline, body, else_body), ("break",), ("continue",).
# A pipeline is (declared variable names, "declare"|"assign"|"", [command...]); a command
# is a list of operands; an operand is ("field", base, [names]) with base "." or a
# variable or a nested operand, ("literal", value), ("function", name) or
# ("pipeline", pipeline).


class Template:
    """A parsed template; ``execute`` renders it for one value."""

    def __init__(self, source: str, functions: dict[str, Callable] | None = None) -> None:
        self.source = source
        self.functions = {**FUNCTIONS, **(functions or {})}
        parts = _split_actions(source)
        self._parts = parts
        self._position = 0
        body, terminator = self._parse_list()
        if terminator is not None:
            raise TemplateError(f'template: unexpected "{{{{{terminator}}}}}" in {source!r}')
        self.body = body

    def _parse_list(self) -> tuple[list, str | None]:
        nodes: list = []
        while self._position < len(self._parts):
            kind, content = self._parts[self._position]
            self._position += 1
            if kind == "text":
                if content:
                    nodes.append(("text", content))
                continue
            keyword, _, rest = content.strip().partition(" ")
            if keyword in ("end", "else"):
                return nodes, content.strip()
            if keyword in ("if", "range", "with"):
                nodes.append(self._parse_block(keyword, rest))
            elif keyword in ("break", "continue"):
                nodes.append((keyword,))
            elif keyword in ("define", "template", "block"):
                raise TemplateError(f'template: "{keyword}" is not supported by ketch')
            else:
                nodes.append(("action", self._parse_pipeline(_tokenize(content))))
        return nodes, None

    def _parse_block(self, keyword: str, rest: str) -> tuple:
        pipeline = self._parse_pipeline(_tokenize(rest))
        body, terminator = self._parse_list()
        else_body: list = []
        if terminator is None:
            raise TemplateError(f'template: missing {{{{end}}}} for "{keyword}" in {self.source!r}')
        if terminator.startswith("else"):
            chained = terminator[4:].strip()
            if chained.startswith(("if ", "with ")):
                # {{else if x}} is {{else}}{{if x}}...{{end}} sharing the outer {{end}}.
                inner_keyword, _, inner_rest = chained.partition(" ")
                else_body = [self._parse_block(inner_keyword, inner_rest)]
                return (keyword, pipeline, body, else_body)
            else_body, terminator = self._parse_list()
            if terminator != "end":
                raise TemplateError(f'template: missing {{{{end}}}} for "{keyword}"')
        return (keyword, pipeline, body, else_body)

    def _parse_pipeline(self, tokens: list[str]) -> tuple:
        if not tokens:
            raise TemplateError(f"template: missing value for command in {self.source!r}")
        variables: list[str] = []
        mode = ""
        for operator in (":=", "="):
            if operator in tokens and all(
                t.startswith("$") or t == "," for t in tokens[: tokens.index(operator)]
            ):
                variables = [t for t in tokens[: tokens.index(operator)] if t != ","]
                tokens = tokens[tokens.index(operator) + 1 :]
                mode = "declare" if operator == ":=" else "assign"
                break
        commands: list[list] = [[]]
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == "|":
                commands.append([])
                position += 1
                continue
            operand, position = self._parse_operand(tokens, position)
            commands[-1].append(operand)
        if any(not command for command in commands):
            raise TemplateError(f"template: missing command in pipeline in {self.source!r}")
        return (variables, mode, commands)

    def _parse_operand(self, tokens: list[str], position: int) -> tuple[tuple, int]:
        token = tokens[position]
        if token == "(":
            depth, end = 1, position + 1
            while end < len(tokens) and depth:
                depth += {"(": 1, ")": -1}.get(tokens[end], 0)
                end += 1
            if depth:
                raise TemplateError(f"template: unclosed left paren in {self.source!r}")
            operand: tuple = ("pipeline", self._parse_pipeline(tokens[position + 1 : end - 1]))
            position = end
            if (
                position < len(tokens)
                and tokens[position].startswith(".")
                and tokens[position] != "."
            ):
                operand = ("field", operand, _field_names(tokens[position]))
                position += 1
            return operand, position
        if token == ")":
            raise TemplateError(f"template: unexpected right paren in {self.source!r}")
        return _parse_word(token, self.functions, self.source), position + 1

    def execute(self, value: object) -> str:
        """Render the template with ``value`` as dot; TemplateError names the cause."""
        output: list[str] = []
        scope = _Scope({"$": value})
        try:
            _run_list(self, self.body, value, scope, output)
        except _LoopControl:
            raise TemplateError("template: {{break}} or {{continue}} outside {{range}}") from None
        return "".join(output)


def _field_names(token: str) -> list[str]:
    return [name for name in token.split(".")[1:]]


def _parse_word(token: str, functions: dict, source: str) -> tuple:
    if token[0] in '"`':
        return ("literal", _unquote(token))
    if token[0] == "'":
        return ("literal", ord(_unquote('"' + token[1:-1] + '"')))
    if token == ".":
        return ("field", ".", [])
    if token.startswith("."):
        return ("field", ".", _field_names(token))
    if token.startswith("$"):
        name, _, rest = token.partition(".")
        return ("field", name, rest.split(".") if rest else [])
    if token in ("true", "false"):
        return ("literal", token == "true")
    if token == "nil":
        return ("literal", None)
    number = _parse_number(token)
    if number is not None:
        return ("literal", number)
    if token in functions:
        return ("function", token)
    raise TemplateError(f'template: function "{token}" not defined in {source!r}')


def _unquote(token: str) -> str:
    if token[0] == "`":
        return token[1:-1]
    try:
        return json.loads(token)
    except ValueError:
        raise TemplateError(f"template: invalid string literal {token}") from None


def _parse_number(token: str) -> int | float | None:
    try:
        return int(token, 0)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return None


# -- execution ------------------------------------------------------------------------


class _LoopControl(Exception):
    def __init__(self, keyword: str) -> None:
        self.keyword = keyword


class _Scope:
    """Variables visible at one point; a block gets a child scope, as in Go."""

    def __init__(self, variables: dict, parent: _Scope | None = None) -> None:
        self.variables = variables
        self.parent = parent

    def lookup(self, name: str) -> object:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.variables:
                return scope.variables[name]
            scope = scope.parent
        raise TemplateError(f"template: undefined variable: {name}")

    def assign(self, name: str, value: object) -> None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.variables:
                scope.variables[name] = value
                return
            scope = scope.parent
        raise TemplateError(f"template: undefined variable: {name}")


def _run_list(template: Template, nodes: list, dot: object, scope: _Scope, output: list) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            output.append(node[1])
        elif kind == "action":
            value = _run_pipeline(template, node[1], dot, scope)
            if not node[1][0]:
                output.append(format_value(value))
        elif kind in ("if", "with"):
            inner = _Scope({}, scope)
            value = _run_pipeline(template, node[1], dot, inner)
            if is_true(value):
                _run_list(template, node[2], value if kind == "with" else dot, inner, output)
            else:
                _run_list(template, node[3], dot, inner, output)
        elif kind == "range":
            _run_range(template, node, dot, scope, output)
        else:
            raise _LoopControl(kind)


def _run_range(template: Template, node: tuple, dot: object, scope: _Scope, output: list) -> None:
    variables, _mode, commands = node[1]
    value = _run_pipeline(template, ([], "", commands), dot, scope)
    if isinstance(value, dict):
        items = [(key, value[key]) for key in sorted(value)]
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [(index, index) for index in range(value)]
    elif value is None:
        items = []
    else:
        raise TemplateError(f"template: range can't iterate over {format_value(value)}")
    for key, element in items:
        inner = _Scope({}, scope)
        if len(variables) == 1:
            inner.variables[variables[0]] = element
        elif len(variables) == 2:
            inner.variables[variables[0]] = key
            inner.variables[variables[1]] = element
        try:
            _run_list(template, node[2], element, inner, output)
        except _LoopControl as control:
            if control.keyword == "break":
                break
    if not items:
        _run_list(template, node[3], dot, _Scope({}, scope), output)


def _run_pipeline(template: Template, pipeline: tuple, dot: object, scope: _Scope) -> object:
    variables, mode, commands = pipeline
    value: object = _MISSING
    for command in commands:
        value = _run_command(template, command, dot, scope, value)
    if mode == "declare":
        for name in variables:
            scope.variables[name] = value
    elif mode == "assign":
        for name in variables:
            scope.assign(name, value)
    return None if value is _MISSING else value


def _run_command(
    template: Template, command: list, dot: object, scope: _Scope, piped: object
) -> object:
    first = command[0]
    if first[0] == "function":
        name = first[1]
        function = template.functions[name]
        if name in ("and", "or"):
            return _run_logic(template, name, command[1:], dot, scope, piped)
        arguments = [_evaluate(template, operand, dot, scope) for operand in command[1:]]
        if piped is not _MISSING:
            arguments.append(piped)
        try:
            return function(*arguments)
        except TemplateError:
            raise
        except (TypeError, ValueError, KeyError, IndexError) as error:
            raise TemplateError(f"template: error calling {name}: {error}") from None
    if first[0] == "field" and (len(command) > 1 or piped is not _MISSING):
        arguments = [_evaluate(template, operand, dot, scope) for operand in command[1:]]
        if piped is not _MISSING:
            arguments.append(piped)
        return _evaluate_field(template, first, dot, scope, arguments)
    if len(command) > 1 or piped is not _MISSING:
        raise TemplateError(f"template: can't give argument to non-function {first[1]!r}")
    return _evaluate(template, first, dot, scope)


def _run_logic(
    template: Template, name: str, operands: list, dot: object, scope: _Scope, piped: object
) -> object:
    """Evaluate ``and``/``or`` left to right, stopping at the first deciding value."""
    values = [
        lambda operand=operand: _evaluate(template, operand, dot, scope) for operand in operands
    ]
    if piped is not _MISSING:
        values.append(lambda: piped)
    if not values:
        raise TemplateError(f"template: wrong number of args for {name}: want at least 1 got 0")
    value: object = None
    for get in values:
        value = get()
        if is_true(value) != (name == "and"):
            return value
    return value


def _evaluate(template: Template, operand: tuple, dot: object, scope: _Scope) -> object:
    kind = operand[0]
    if kind == "literal":
        return operand[1]
    if kind == "pipeline":
        return _run_pipeline(template, operand[1], dot, _Scope({}, scope))
    if kind == "function":
        return _run_command(template, [operand], dot, scope, _MISSING)
    return _evaluate_field(template, operand, dot, scope, [])


def _evaluate_field(
    template: Template, operand: tuple, dot: object, scope: _Scope, arguments: list
) -> object:
    _, base, names = operand
    if isinstance(base, tuple):
        value = _evaluate(template, base, dot, scope)
    elif base == ".":
        value = dot
    else:
        value = scope.lookup(base)
    for index, name in enumerate(names):
        last = index == len(names) - 1
        value = _field_of(value, name, arguments if last else [])
    if not names and arguments:
        raise TemplateError("template: can't give argument to non-function")
    return value


def _field_of(value: object, name: str, arguments: list) -> object:
    if isinstance(value, dict):
        if arguments:
            raise TemplateError(f"template: {name} is not a method but has arguments")
        return value.get(name, NO_VALUE_MARKER)
    if value is None or value is NO_VALUE_MARKER:
        raise TemplateError(f"template: nil pointer evaluating .{name}")
    attribute = getattr(value, name, _MISSING) if not name.startswith("_") else _MISSING
    if attribute is _MISSING:
        kind = type(value).__name__
        raise TemplateError(f"template: can't evaluate field {name} in type {kind}")
    if callable(attribute):
        return attribute(*arguments)
    if arguments:
        raise TemplateError(f"template: {name} is not a method but has arguments")
    return attribute
