"""cluster.yaml: read, check against the shipped schema, cross-check, fill defaults.

The pipeline (after ray's cluster config):

1. *read*: the file is composed into YAML nodes, which know their line, so
   every error can say where it is;
2. *schema*: the nodes are checked against ``cluster.schema.json``, shipped
   in this package.  `_Checker` reads the keywords there (type, required,
   enum, const, ranges, pattern, anyOf, default) and the two annotations
   ``x-expected`` (what a value must be) and ``x-example`` (the fix shown):
   a new key, range or default is an edit of the schema, not of this module;
3. *cross-field rules*, in code (`_build`): local or remote, duplicate
   addresses and labels, heartbeat_timeout > heartbeat_interval, and the
   paths that must exist on this machine;
4. *build* the frozen `ClusterConfig`.

Every failure is one `ConfigError` naming the file and line, the key path,
the bad value and the fix::

    cluster.yaml:7: hosts[1].cores: 'many' is not a number of nodes or 'auto'; write e.g. cores: auto or cores: 4

The reference of every key is the ``description`` in the schema (and the
commented example in the repository's ``cluster.yaml``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "ConfigError",
    "SshOptions",
    "HostConfig",
    "ClusterConfig",
    "load",
    "schema",
    "LOCAL_ADDRESSES",
]

#: Addresses that mean this machine; a host there without ssh: is local.
LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1"})

SCHEMA_FILE = "cluster.schema.json"


class ConfigError(Exception):
    """A cluster.yaml that cannot be used: where, which key, what value, and the fix.

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


@dataclass(frozen=True)
class SshOptions:
    """How to log in to a remote host."""

    user: str | None = None  # None: the current user (or ~/.ssh/config's)
    port: int = 22
    key: str | None = None  # an absolute path to a private key (checked to exist)
    options: tuple[str, ...] = ()  # extra ``-o Name=value`` options


@dataclass(frozen=True)
class HostConfig:
    """One machine and the nodes to start on it."""

    address: str  # "localhost", an IP or a host name
    cores: int | None  # None means auto: the launcher counts the host's cores
    bind: str  # the address its nodes listen on (and are reached at)
    python: str  # the Python that runs its nodes
    ssh: SshOptions | None  # None for a local host
    workdir: str | None = None  # the folder nodes run in (remote, None: the ssh login folder)
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables
    label: str = ""  # the dashboard's name for it; load() fills in the address

    @property
    def local(self) -> bool:
        """True when the nodes are started here as processes, False over SSH."""
        return self.ssh is None


@dataclass(frozen=True)
class ClusterConfig:
    """A checked cluster.yaml, with every default filled in."""

    name: str
    path: Path  # the yaml file (absolute)
    keys: Path  # the cluster key file; the launcher creates it if missing
    hosts: tuple[HostConfig, ...]
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 3.0
    meter_interval: float = 1.0
    join_timeout: float = 30.0
    # Always a Path once built: None (only when constructing by hand) means
    # <folder of the yaml>/.termite.
    state_dir: Path = None  # type: ignore[assignment]

    def __post_init__(self):
        if self.state_dir is None:
            object.__setattr__(self, "state_dir", Path(self.path).parent / ".termite")


def load(path: str | os.PathLike) -> ClusterConfig:
    """Read and check a cluster.yaml; raise ConfigError saying what to fix."""
    label = os.fspath(path)
    file = Path(path).expanduser().absolute()
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            label, None, "", label, f"no such file (looked for {file})",
            "write one, e.g. a copy of the cluster.yaml at the root of the termite repository",
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            label, None, "", label, "is a folder, not a cluster.yaml file",
            f"give the yaml file in it, e.g. {Path(label) / 'cluster.yaml'}",
        ) from None
    except PermissionError:
        raise ConfigError(label, None, "", label, "cannot be read (permission denied)",
                          "make it readable: chmod u+r " + label) from None
    except UnicodeDecodeError as exc:
        line = file.read_bytes().count(b"\n", 0, exc.start) + 1
        raise ConfigError(label, line, "", None, "is not UTF-8 text", "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(label, None, "", label, f"cannot be read ({exc.strerror or exc})",
                          "check the path") from None
    return _load_text(text, file, label)


def schema() -> dict:
    """The cluster.yaml schema (a copy): every key's type, range, default and description."""
    return copy.deepcopy(_schema())


# --------------------------------------------------------------------------
# 1. Read
# --------------------------------------------------------------------------


def _load_text(text: str, file: Path, label: str) -> ClusterConfig:
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(exc, label) from None
        if root is None:
            raise ConfigError(label, None, "", None, "the file is empty",
                              "write at least: hosts: [{address: localhost, cores: auto}]")
        checker = _Checker(loader, label)
        data = checker.check(root, _schema(), "", _Hint())
        return _build(data, checker, file)
    finally:
        loader.dispose()


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


# --------------------------------------------------------------------------
# 2. Schema
# --------------------------------------------------------------------------

# The keywords `_Checker` understands.  The schema is refused if it uses any
# other, so that no rule written there is silently ignored.
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


@functools.cache
def _schema() -> dict:
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    root = json.loads(text)
    _check_keywords(root, "#")
    return root


def _check_keywords(s: dict, where: str) -> None:
    unknown = set(s) - SUPPORTED_KEYWORDS
    if unknown:
        raise RuntimeError(f"{SCHEMA_FILE} {where}: keywords the checker does not implement: {sorted(unknown)}")
    for group in ("properties", "patternProperties", "$defs"):
        for name, sub in s.get(group, {}).items():
            _check_keywords(sub, f"{where}/{group}/{name}")
    for key in ("items", "additionalProperties", "propertyNames"):
        if isinstance(s.get(key), dict):
            _check_keywords(s[key], f"{where}/{key}")
    for i, sub in enumerate(s.get("anyOf", ())):
        _check_keywords(sub, f"{where}/anyOf/{i}")


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


class _Checker:
    """Checks composed YAML nodes against the schema; returns plain values with defaults.

    ``lines`` maps each key path it saw to its line, for the cross-field rules.
    """

    def __init__(self, loader: yaml.SafeLoader, label: str):
        self.loader = loader
        self.label = label
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
                raise RuntimeError(f"{SCHEMA_FILE}: only local $ref are supported, not {ref}")
            target = _schema()
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
        return f"write e.g. {hint.example}" if hint.example else "see the description in " + SCHEMA_FILE

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


# --------------------------------------------------------------------------
# 3. Cross-field rules and 4. build
# --------------------------------------------------------------------------


def _is_loopback(address: str) -> bool:
    address = address.lower()
    return address in LOCAL_ADDRESSES or address.startswith("127.")


def _local_path(text: str, folder: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path


def _build(data: dict, checker: _Checker, file: Path) -> ClusterConfig:
    folder = file.parent
    error, line_of = checker.error, checker.line_of

    name = data.get("name") or file.stem
    state_dir = _local_path(data["state_dir"], folder) if "state_dir" in data else folder / ".termite"
    if state_dir.exists() and not state_dir.is_dir():
        given = data.get("state_dir", str(state_dir))
        raise error(line_of("state_dir"), "state_dir", given,
                    f"{given!r} is a file, not a folder (looked up {state_dir})",
                    "give a folder, e.g. state_dir: .termite")
    keys = _local_path(data["keys"], folder) if "keys" in data else state_dir / f"{name}.key"
    if keys.is_dir():
        given = data.get("keys", str(keys))
        raise error(line_of("keys"), "keys", given,
                    f"{given!r} is a folder, not a key file (looked up {keys})",
                    f"give a file path, e.g. keys: {Path(data.get('keys', '.termite')) / (name + '.key')}")

    interval, timeout = data["heartbeat_interval"], data["heartbeat_timeout"]
    if timeout <= interval:
        if "heartbeat_timeout" in checker.lines or "heartbeat_interval" not in checker.lines:
            raise error(line_of("heartbeat_timeout"), "heartbeat_timeout", timeout,
                        f"{timeout} is not more than heartbeat_interval ({interval}), so every node would be down",
                        f"make it several intervals, e.g. heartbeat_timeout: {_nice(interval * 6)}")
        raise error(line_of("heartbeat_interval"), "heartbeat_interval", interval,
                    f"{interval} is not less than heartbeat_timeout ({timeout}, the default), "
                    "so every node would be down",
                    f"make it a fraction of the timeout, e.g. heartbeat_interval: {_nice(timeout / 6)}, "
                    f"or set heartbeat_timeout: {_nice(interval * 6)}")

    hosts = tuple(_host(i, h, checker, folder) for i, h in enumerate(data["hosts"]))

    # Each address once: more nodes on a host is cores:, not a second entry.
    # (localhost and 127.0.0.1 may both be listed: two "hosts" on this machine
    # with, say, different Pythons.)
    first_at: dict[str, int] = {}
    labels: dict[str, int] = {}
    for i, host in enumerate(hosts):
        address = host.address.lower()
        if address in first_at:
            j = first_at[address]
            raise error(line_of(f"hosts[{i}].address"), f"hosts[{i}].address", host.address,
                        f"{host.address!r} is already hosts[{j}] on line {line_of(f'hosts[{j}]')}",
                        "list each host once; for more nodes on it set its cores:")
        first_at[address] = i
        if host.label in labels:
            j = labels[host.label]
            raise error(line_of(f"hosts[{i}].label"), f"hosts[{i}].label", host.label,
                        f"{host.label!r} is already the label of hosts[{j}]",
                        "give each host its own label, e.g. label: " + f"{host.label}-2")
        labels[host.label] = i

    # Nodes on another machine cannot reach nodes that listen on loopback.
    away = [i for i, h in enumerate(hosts) if not _is_loopback(h.bind)]
    if away:
        for i, host in enumerate(hosts):
            if _is_loopback(host.bind):
                key = f"hosts[{i}].bind" if f"hosts[{i}].bind" in checker.lines else f"hosts[{i}].address"
                raise error(line_of(key), key, host.bind if key.endswith("bind") else host.address,
                            f"{host.address!r} listens on loopback ({host.bind}), which the nodes of "
                            f"hosts[{away[0]}] ({hosts[away[0]].address}) cannot reach",
                            "write this machine's address as the other hosts see it, with local: true, "
                            "e.g. address: 192.168.1.10 and local: true")

    return ClusterConfig(
        name=name,
        path=file,
        keys=keys,
        hosts=hosts,
        heartbeat_interval=float(interval),
        heartbeat_timeout=float(timeout),
        meter_interval=float(data["meter_interval"]),
        join_timeout=float(data["join_timeout"]),
        state_dir=state_dir,
    )


def _nice(x: float) -> str:
    return f"{x:g}"


def _host(i: int, h: dict, checker: _Checker, folder: Path) -> HostConfig:
    error, line_of = checker.error, checker.line_of
    kp = f"hosts[{i}]"
    address = h["address"]
    ssh_value = h.get("ssh")
    has_ssh = ssh_value is not None and ssh_value is not False
    local_flag = h.get("local")

    if local_flag is True and has_ssh:
        raise error(line_of(f"{kp}.local"), f"{kp}.local", True,
                    "true contradicts the ssh: section (a host with ssh: is reached over SSH)",
                    "remove ssh: for a host that is this machine, or local: for one reached over SSH")
    local = not has_ssh and (local_flag if local_flag is not None else _is_loopback(address))
    if not local and not has_ssh:
        if local_flag is False:
            raise error(line_of(f"{kp}.local"), f"{kp}.local", False,
                        "false says this host is reached over SSH, but it has no ssh: section",
                        "add ssh: true (or ssh: {user: me, key: ~/.ssh/id_ed25519}), or remove local: false")
        raise error(line_of(f"{kp}.address"), f"{kp}.address", address,
                    f"{address!r} is another machine, so it needs an ssh: section",
                    "add ssh: true (or ssh: {user: me, port: 22, key: ~/.ssh/id_ed25519}), "
                    f"or local: true if {address} is this machine")

    ssh = None
    if has_ssh:
        settings = ssh_value if isinstance(ssh_value, dict) else checker.defaults("#/$defs/ssh")  # ssh: true
        ssh = _ssh(f"{kp}.ssh", settings, checker, folder)

    cores = h["cores"]
    cores = None if cores == "auto" else cores

    bind = h.get("bind") or ("127.0.0.1" if _is_loopback(address) else address)

    python = h.get("python")
    if python is None:
        python = sys.executable if local else "python3"
    elif local:
        python = _local_python(python, f"{kp}.python", checker, folder)

    workdir = h.get("workdir")
    if workdir is not None and local:
        path = _local_path(workdir, folder)
        if not path.is_dir():
            raise error(line_of(f"{kp}.workdir"), f"{kp}.workdir", workdir,
                        f"{workdir!r} is not a folder (looked up {path})",
                        "give a folder that exists on this machine, or leave workdir out")
        workdir = str(path)

    env = tuple((k, str(v)) for k, v in h.get("env", {}).items())
    return HostConfig(address=address, cores=cores, bind=bind, python=python, ssh=ssh,
                      workdir=workdir, env=env, label=h.get("label") or address)


def _ssh(kp: str, s: dict, checker: _Checker, folder: Path) -> SshOptions:
    key = s.get("key")
    if key is not None:
        path = _local_path(key, folder)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise checker.error(checker.line_of(f"{kp}.key"), f"{kp}.key", key,
                                f"{key!r} {what} (looked up {path})",
                                "give the path of a private key, e.g. key: ~/.ssh/id_ed25519, "
                                "or leave key out to use ssh's own keys")
        key = str(path)
    raw = s.get("options", ())
    if isinstance(raw, dict):
        options = tuple(f"{k}={_ssh_word(v)}" for k, v in raw.items())
    else:
        options = tuple(raw)
    return SshOptions(user=s.get("user"), port=s["port"], key=key, options=options)


def _ssh_word(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _local_python(python: str, kp: str, checker: _Checker, folder: Path) -> str:
    if os.sep in python or (os.altsep and os.altsep in python) or python.startswith("~"):
        path = _local_path(python, folder)
        found = str(path) if path.is_file() and os.access(path, os.X_OK) else None
        looked = str(path)
    else:
        found = shutil.which(python)
        looked = f"{python} on PATH"
    if found is None:
        raise checker.error(checker.line_of(kp), kp, python, f"{python!r} is not a Python here (looked up {looked})",
                            f"give the path of a Python with termite installed, e.g. python: {sys.executable}, "
                            "or leave python out to use the one running termite-launch")
    return found
