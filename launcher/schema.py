"""Checking a YAML file against a JSON schema, with errors that say where and what to fix.

The general half of the cluster.yaml pipeline (termite_launcher.config holds
the other: the cluster's own cross-field rules and its model).  ``check_yaml``

1. composes the text into YAML nodes, which know their line, so every error
   can say where it is (a syntax error too, with a fix for the usual slips:
   tabs, an unclosed bracket, a second document);
2. checks the nodes against a schema: the keywords in ``SUPPORTED_KEYWORDS``
   (type, required, enum, const, ranges, pattern, anyOf, default, local
   ``$ref``) and three annotations: ``x-expected`` (what a value must be),
   ``x-example`` (the fix shown) and ``x-aliases`` (names users write instead
   of a key, for "did you mean").  A schema that uses any other keyword is
   refused (``check_keywords``), so that no rule written there is ignored;
3. returns plain values with the schema's defaults filled in, and the
   `Checker`, whose ``error``, ``line_of`` and ``defaults`` serve the
   caller's own rules.

Every failure is one `ConfigError` naming the file and line, the key path,
the bad value and the fix::

    cluster.yaml:7: hosts[1].cores: 'many' is not a number of nodes or 'auto'; write e.g. cores: auto or cores: 4
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["SUPPORTED_KEYWORDS", "Checker", "ConfigError", "check_keywords", "check_yaml"]

# The keywords `Checker` understands; check_keywords refuses a schema with any other.
SUPPORTED_KEYWORDS = frozenset({
    "$schema", "$id", "$defs", "$ref", "title", "description", "examples",
    "type", "properties", "required", "additionalProperties", "patternProperties", "propertyNames",
    "items", "minItems", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "minLength", "pattern",
    "anyOf", "default",
    "x-expected", "x-example", "x-aliases",
})

_TYPE_WORDS = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "a whole number",
    "number": "a number", "boolean": "true or false", "null": "empty",
}


class ConfigError(Exception):
    """A YAML file (a cluster.yaml) that cannot be used: where, which key, what value, and the fix.

    ``str(e)`` reads ``PATH:LINE: KEY.PATH: PROBLEM; FIX``.  ``line`` is None
    when the problem has no line (a missing or empty file).  ``key_path`` is
    like ``hosts[1].ssh.port`` ("" for the file as a whole); ``value`` is the
    bad value as read (the key itself for an unknown key, None when missing).
    """

    def __init__(self, path: str, line: int | None, key_path: str, value: object, problem: str, fix: str):
        self.path = path
        self.line = line
        self.key_path = key_path
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        text = f"{where}: {self.key_path}: {self.problem}" if self.key_path else f"{where}: {self.problem}"
        return f"{text}; {self.fix}" if self.fix else text

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.key_path, self.value, self.problem, self.fix))


def check_yaml(text: str, schema: dict, label: str, schema_name: str) -> tuple[object, Checker]:
    """Parse ``text`` and check it against ``schema``: its values with defaults, and the checker.

    ``label`` names the file in errors; ``schema_name`` the schema (in "see
    the description in ..." fixes).  An empty file gets the schema's
    ``x-example`` as its fix.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(exc, label) from None
        if root is None:
            example = schema.get("x-example")
            raise ConfigError(label, None, "", None, "the file is empty",
                              f"write at least: {example}" if example else "see the description in " + schema_name)
        checker = Checker(loader, label, schema, schema_name)
        return checker.check(root, schema, "", _Hint()), checker
    finally:
        loader.dispose()  # the checker's later use (error, line_of, defaults) needs no loader


def check_keywords(schema: dict, name: str = "the schema", where: str = "#") -> None:
    """RuntimeError if ``schema`` uses a keyword the checker does not implement (see SUPPORTED_KEYWORDS)."""
    unknown = set(schema) - SUPPORTED_KEYWORDS
    if unknown:
        raise RuntimeError(f"{name} {where}: keywords the checker does not implement: {sorted(unknown)}")
    for group in ("properties", "patternProperties", "$defs"):
        for key, sub in schema.get(group, {}).items():
            check_keywords(sub, name, f"{where}/{group}/{key}")
    for key in ("items", "additionalProperties", "propertyNames"):
        if isinstance(schema.get(key), dict):
            check_keywords(schema[key], name, f"{where}/{key}")
    for i, sub in enumerate(schema.get("anyOf", ())):
        check_keywords(sub, name, f"{where}/anyOf/{i}")


def _syntax_error(exc: yaml.MarkedYAMLError, label: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = "; ".join(p for p in (exc.context, exc.problem) if p) or "not valid YAML"
    if "'\\t'" in problem:
        fix = "indent with spaces, not tabs"
    elif exc.context and "flow" in exc.context and exc.context_mark is not None:
        fix = f"close the [ ] or {{ }} opened on line {exc.context_mark.line + 1}"
    elif "expected a single document" in problem:
        fix = "keep one document: remove the second ---"
    else:
        fix = "check the indentation and the quotes on this line and the one before"
    return ConfigError(label, line, "", None, f"not valid YAML: {problem}", fix)


@dataclass(frozen=True)
class _Hint:
    """What the nearest enclosing schema says a value must be, and the fix to show."""

    expected: str = ""
    example: str = ""
    key: str = ""  # the mapping key the value sits under, for "quote it" fixes


def _join(key_path: str, key: str) -> str:
    return f"{key_path}.{key}" if key_path else key


def _kind(node: Node, value: object) -> str:
    if isinstance(node, MappingNode):
        return "object"
    if isinstance(node, SequenceNode):
        return "array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__  # a date or some other YAML type: never what a key wants


def _accepts(types, kind: str) -> bool:
    types = [types] if isinstance(types, str) else types
    return kind in types or (kind == "integer" and "number" in types)


class Checker:
    """Checks composed YAML nodes against a schema; returns plain values with defaults.

    ``lines`` maps each key path it saw to its line, for the caller's cross-field rules.
    """

    def __init__(self, loader: yaml.SafeLoader, label: str, schema: dict, schema_name: str):
        self.loader = loader
        self.label = label
        self.schema = schema  # the root: what a $ref points into
        self.schema_name = schema_name
        self.lines: dict[str, int] = {}

    def error(self, line, key_path, value, problem, fix) -> ConfigError:
        return ConfigError(self.label, line, key_path, value, problem, fix)

    def line_of(self, key_path: str) -> int | None:
        """The line of key_path, or of the nearest enclosing key that was written."""
        while key_path:
            if key_path in self.lines:
                return self.lines[key_path]
            key_path = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", key_path) if re.search(r"[.\[]", key_path) else ""
        return self.lines.get("")

    def resolve(self, s: dict) -> dict:
        while "$ref" in s:
            ref = s["$ref"]
            if not ref.startswith("#/"):
                raise RuntimeError(f"{self.schema_name}: only local $ref are supported, not {ref}")
            target = self.schema
            for part in ref[2:].split("/"):
                target = target[part]
            s = {**target, **{k: v for k, v in s.items() if k != "$ref"}}
        return s

    def defaults(self, ref: str) -> dict:
        """The defaults the schema at ref gives its keys (for ssh: true, which sets none)."""
        s = self.resolve({"$ref": ref})
        return {k: copy.deepcopy(sub["default"]) for k, sub in s.get("properties", {}).items()
                if "default" in self.resolve(sub)}

    def value_of(self, node: Node, key_path: str = "") -> object:
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:  # e.g. `!!int abc`
            problem = getattr(exc, "problem", None) or str(exc)
            raise self.error(node.start_mark.line + 1, key_path, node.tag, f"cannot be read: {problem}",
                             "write a plain value, without a !tag") from None

    def show(self, node: Node, value: object) -> str:
        """The value as the user wrote it (repr for strings, as in 'many')."""
        if isinstance(value, str):
            return repr(value)
        if isinstance(node, ScalarNode):
            return node.value
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        return text if len(text) <= 60 else text[:57] + "..."

    # -- the walk --------------------------------------------------------

    def check(self, node: Node, s: dict, key_path: str, hint: _Hint) -> object:
        s = self.resolve(s)
        hint = dataclasses.replace(
            hint,
            expected=s.get("x-expected") or hint.expected or self.expected(s),
            example=s.get("x-example") or hint.example,
        )
        self.lines.setdefault(key_path, node.start_mark.line + 1)
        if "anyOf" in s:
            return self.any_of(node, s, key_path, hint)
        value = None if isinstance(node, (MappingNode, SequenceNode)) else self.value_of(node, key_path)
        kind = _kind(node, value)
        if "type" in s and not _accepts(s["type"], kind):
            raise self.type_error(node, value, kind, s, key_path, hint)
        if kind == "object":
            return self.mapping(node, s, key_path, hint)
        if kind == "array":
            return self.sequence(node, s, key_path, hint)
        self.scalar(node, value, s, key_path, hint)
        return value

    def expected(self, s: dict) -> str:
        if "const" in s:
            return repr(s["const"])
        if "enum" in s:
            return "one of " + ", ".join(map(repr, s["enum"]))
        types = s.get("type", [])
        types = [types] if isinstance(types, str) else types
        return " or ".join(_TYPE_WORDS[t] for t in types) or "a value"

    def fix(self, hint: _Hint) -> str:
        return f"write e.g. {hint.example}" if hint.example else "see the description in " + self.schema_name

    def type_error(self, node, value, kind, s, key_path, hint) -> ConfigError:
        line = node.start_mark.line + 1
        if kind == "null":
            return self.error(line, key_path, None, f"has no value; it must be {hint.expected}", self.fix(hint))
        if kind in ("object", "array"):
            value = self.value_of(node)
            return self.error(line, key_path, value,
                              f"{self.show(node, value)} is {_TYPE_WORDS[kind]}, not {hint.expected}", self.fix(hint))
        fix = self.fix(hint)
        if s.get("type") in ("string", ["string"]) and isinstance(node, ScalarNode) and node.style is None:
            # YAML read `no`, `1.10` or `2024-01-01` as something else than text.
            quoted = f"{hint.key}: '{node.value}'" if hint.key else f"'{node.value}'"
            fix = f"quote it: {quoted}"
        return self.error(line, key_path, value, f"{self.show(node, value)} is not {hint.expected}", fix)

    def any_of(self, node, s, key_path, hint) -> object:
        branches = [self.resolve(b) for b in s["anyOf"]]
        value = None if isinstance(node, (MappingNode, SequenceNode)) else self.value_of(node, key_path)
        kind = _kind(node, value)
        fitting = [b for b in branches if "type" not in b or _accepts(b["type"], kind)]
        if not fitting:
            types = [t for b in branches for t in ([b["type"]] if isinstance(b["type"], str) else b["type"])]
            raise self.type_error(node, value, kind, {"type": types}, key_path, hint)
        first = None
        for branch in fitting:
            try:
                return self.check(node, {**branch, "x-expected": branch.get("x-expected", hint.expected)},
                                  key_path, hint)
            except ConfigError as exc:
                first = first or exc
        raise first

    def mapping(self, node: MappingNode, s, key_path, hint) -> dict:
        properties = s.get("properties", {})
        patterns = s.get("patternProperties", {})
        additional = s.get("additionalProperties", True)
        # Duplicate keys are an error (YAML would keep the last one silently);
        # keys brought in by a `<<: *anchor` merge may be overridden.
        # Keys are taken as written: `on:` is the name "on", not YAML 1.1's true.
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                key = self.value_of(key_node)
                raise self.error(line, key_path, key, f"the key {self.show(key_node, key)} is not a name",
                                 "write names as keys, e.g. cores: 4")
            key = key_node.value
            if key in seen:
                raise self.error(line, _join(key_path, str(key)), key,
                                 f"is given twice (first on line {seen[key]})", "keep one of them")
            seen[key] = line
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else node.start_mark.line + 1
            raise self.error(line, _join(key_path, "<<"), None, f"cannot merge: {exc.problem}",
                             "merge a mapping by its anchor, e.g. <<: *worker") from None

        out: dict[str, object] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            sub_path = _join(key_path, key)
            self.lines[sub_path] = line
            if "propertyNames" in s:
                self.name(key, key_node, s["propertyNames"], sub_path, hint)
            if key in properties:
                sub = properties[key]
            elif any(re.search(p, key) for p in patterns):
                sub = next(patterns[p] for p in patterns if re.search(p, key))
            elif additional is False:
                raise self.unknown_key(key, line, sub_path, s)
            else:
                sub = additional if isinstance(additional, dict) else {}
            out[key] = self.check(value_node, sub, sub_path, _Hint(key=key, example=hint.example))

        line = node.start_mark.line + 1
        for key in s.get("required", ()):
            if key not in out:
                sub = self.resolve(properties.get(key, {}))
                example = sub.get("x-example")
                raise self.error(line, _join(key_path, key), None, f"is missing ({key}: is required here)",
                                 f"add e.g. {example}" if example else f"add {key}:")
        for key, sub in properties.items():
            sub = self.resolve(sub)
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
        return out

    def name(self, key, key_node, s, key_path, hint) -> None:
        if "pattern" in s and not re.search(s["pattern"], key):
            raise self.error(key_node.start_mark.line + 1, key_path, key,
                             f"{key!r} is not {s.get('x-expected', 'a valid name')}",
                             self.fix(dataclasses.replace(hint, example=s.get("x-example") or hint.example)))

    def unknown_key(self, key, line, key_path, s) -> ConfigError:
        properties = s.get("properties", {})
        aliases = {}
        for name, sub in properties.items():
            for alias in self.resolve(sub).get("x-aliases", ()):
                aliases.setdefault(alias.lower(), name)
        lowered = key.lower().replace("-", "_")
        guess = None
        if lowered in properties:
            guess = lowered
        elif lowered in aliases:
            guess = aliases[lowered]
        else:
            close = difflib.get_close_matches(lowered, list(properties) + list(aliases), n=1, cutoff=0.6)
            if close:
                guess = close[0] if close[0] in properties else aliases[close[0]]
        if guess:
            fix = f"did you mean {guess}?"
        else:
            fix = "the keys here are " + ", ".join(properties)
        return self.error(line, key_path, key, "unknown key", fix)

    def sequence(self, node: SequenceNode, s, key_path, hint) -> list:
        if len(node.value) < s.get("minItems", 0):
            n = s["minItems"]
            shown = self.show(node, self.value_of(node))
            problem = f"{shown} is empty" if not node.value else f"{shown} has {len(node.value)}, fewer than {n}"
            raise self.error(node.start_mark.line + 1, key_path, self.value_of(node),
                             f"{problem}; it must be {hint.expected} with at least {n}", self.fix(hint))
        items = s.get("items", {})
        return [self.check(item, items, f"{key_path}[{i}]", _Hint(example=hint.example))
                for i, item in enumerate(node.value)]

    def scalar(self, node, value, s, key_path, hint) -> None:
        line = node.start_mark.line + 1
        shown = self.show(node, value)

        def fail(problem):
            return self.error(line, key_path, value, problem, self.fix(hint))

        if "const" in s and value != s["const"]:
            raise fail(f"{shown} is not {hint.expected}")
        if "enum" in s and value not in s["enum"]:
            raise fail(f"{shown} is not {hint.expected}")
        if isinstance(value, str):
            if len(value) < s.get("minLength", 0):
                raise fail(f"{shown} is empty; it must be {hint.expected}" if not value
                           else f"{shown} is too short; it must be {hint.expected}")
            if "pattern" in s and not re.search(s["pattern"], value):
                raise fail(f"{shown} is not {hint.expected}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in s and value < s["minimum"]:
                raise fail(f"{shown} is too small (the least is {s['minimum']}); it must be {hint.expected}")
            if "exclusiveMinimum" in s and value <= s["exclusiveMinimum"]:
                raise fail(f"{shown} is too small; it must be {hint.expected}")
            if "maximum" in s and value > s["maximum"]:
                raise fail(f"{shown} is too large (the most is {s['maximum']}); it must be {hint.expected}")

