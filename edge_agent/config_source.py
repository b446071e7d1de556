"""Where each config value came from, so every error can name the key, the file and the line.

pydantic validates plain data and reports errors by key path (``("mqtt", "port")``); PyYAML's
composed nodes know the line of every key and value. This module keeps the two together:

* ``parse_yaml`` builds the data and an ``Origins`` map from key path to ``file:line``
  (YAML syntax errors and duplicate keys name the file and the line too);
* ``apply_env`` applies ``EDGE_AGENT__...`` overrides and records, for each path they set, the
  variable's own name, so an error in an override names the variable, not a YAML key;
* ``issues`` turns a pydantic ``ValidationError`` into ``Issue``s in the config's words:
  ``file:line: mqtt.hots: unknown key (did you mean 'host'?)``, detector parameter errors under
  ``detector.params.<name>``.

Written here rather than taken from a library: pydantic-settings and the YAML-with-line-number
packages each do half of it (env or marks), and the mapping between them is ours.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

ENV_PREFIX = "EDGE_AGENT__"
Path_ = tuple[str | int, ...]


class Issue(tuple):
    """One config problem: ``(key, message)`` (so ``for key, msg in errors`` works), plus
    ``where`` (``file:line``, or ``environment variable NAME``) when it is known."""

    where: str | None

    def __new__(cls, key: str, message: str, where: str | None = None) -> Issue:
        self = super().__new__(cls, (key, message))
        self.where = where
        return self

    @property
    def key(self) -> str:
        return self[0]

    @property
    def message(self) -> str:
        return self[1]

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.message}" if self.where else f"{self.key}: {self.message}"


class Located(ValueError):
    """Raised by a validator with problems at paths below its own: ``[(path, message)]``."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]):
        self.problems = problems
        super().__init__("; ".join(f"{dotted(p)}: {m}" for p, m in problems))


class ConfigError(Exception):
    """A config that cannot be used; ``errors`` lists ``Issue``s, i.e. ``(key.path, message)`` pairs."""

    def __init__(self, source: str, errors: Iterable[tuple[str, str]]):
        self.source = source
        self.errors = [e if isinstance(e, Issue) else Issue(*e) for e in errors]
        lines = [f"{source}: {len(self.errors)} config error(s)"]
        lines += [f"  {e}" for e in self.errors]
        super().__init__("\n".join(lines))


def dotted(path: Iterable[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


class Origins:
    """Key path -> where it was set. Paths set by an environment variable win over the file."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}  # 1-based line of the key (or list item)
        self.env: dict[Path_, str] = {}  # path -> variable name

    def where(self, path: Iterable[str | int]) -> str | None:
        path = tuple(path)
        for n in range(len(path), -1, -1):
            name = self.env.get(path[:n])
            if name is not None:
                return f"environment variable {name}"
        for n in range(len(path), 0, -1):
            line = self.lines.get(path[:n])
            if line is not None:
                return f"{self.source}:{line}"
        return self.source if self.lines else None

    def exact(self, path: Iterable[str | int]) -> str | None:
        """Where exactly this key was set, or None when it was not (it has its default)."""
        path = tuple(path)
        for n in range(len(path), -1, -1):
            name = self.env.get(path[:n])
            if name is not None:
                return f"environment variable {name}"
        line = self.lines.get(path)
        return f"{self.source}:{line}" if line is not None else None

    def env_name(self, path: Iterable[str | int]) -> str | None:
        path = tuple(path)
        for n in range(len(path), 0, -1):
            if path[:n] in self.env:
                return self.env[path[:n]]
        return None


# ---- YAML with lines -------------------------------------------------------------------
def _mark(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f":{mark.line + 1}" if mark is not None else ""


def parse_yaml(text: str, source: str) -> tuple[Any, Origins, list[Issue]]:
    """The document's data, where each key is, and duplicate-key issues (YAML keeps the last)."""
    origins = Origins(source)
    loader = yaml.SafeLoader(text)
    loader.name = source  # PyYAML's own messages say "<unicode string>" otherwise
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        msg = f"YAML syntax: {context + ', ' if context else ''}{problem}"
        started, at = getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)
        if started is not None and at is not None and started.line != at.line:
            msg += f" (what is unclosed started on line {started.line + 1})"
        if "'\\t'" in problem:
            msg += " (YAML indents with spaces, never tabs)"
        raise ConfigError(source, [Issue("(yaml)", msg, f"{source}{_mark(exc)}")]) from None
    finally:
        loader.dispose()
    dups: list[Issue] = []
    if node is not None:
        _walk(node, (), origins, dups)
    return data, origins, dups


def _walk(node: yaml.Node, path: Path_, origins: Origins, dups: list[Issue]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                dups.append(Issue(dotted(path + (key,)), f"appears twice (also on line {seen[key]})",
                                  f"{origins.source}:{line}"))
            seen[key] = line
            origins.lines[path + (key,)] = line
            _walk(value_node, path + (key,), origins, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            origins.lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), origins, dups)


# ---- environment overrides -------------------------------------------------------------
def apply_env(data: dict[str, Any], environ: dict[str, str], origins: Origins) -> list[Issue]:
    """Apply ``EDGE_AGENT__A__B=value`` overrides to ``data``; values are YAML scalars."""
    issues: list[Issue] = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        path: Path_ = tuple(int(p) if p.isdigit() else p for p in parts)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        trial = copy.deepcopy(data)  # a failed override must leave nothing half-made behind
        try:
            _set(trial, path, value)
        except (ValueError, IndexError, TypeError, AttributeError, KeyError):
            issues.append(Issue(dotted(path), "does not fit the config (no such list item, or the key above it is not a section)",
                                f"environment variable {name}"))
            continue
        data.clear()
        data.update(trial)
        origins.env[path] = name
    return issues


def _set(data: Any, path: Path_, value: Any) -> None:
    node = data
    for i, key in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise TypeError(key)
        nxt = node.get(key)
        if nxt is None:
            nxt = [] if isinstance(path[i + 1], int) else {}
            node[key] = nxt
        node = nxt
    last = path[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise TypeError(last)


# ---- pydantic errors in the config's words ------------------------------------------------
def _unwrap(ann: Any) -> Any:
    """The model class (or list/dict of one) inside Optional/Annotated/unions."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(ann):
            got = _unwrap(arg)
            if isinstance(got, type) and issubclass(got, BaseModel) or typing.get_origin(got) in (list, dict):
                return got
        return None
    return ann


def model_at(root: type[BaseModel], path: Iterable[str | int]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``path`` (None below a plain dict)."""
    current: Any = root
    for part in path:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = _unwrap(field.annotation)
        elif typing.get_origin(current) in (list, dict):
            current = _unwrap(typing.get_args(current)[-1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def suggestion(key: str, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"allowed here: {', '.join(allowed)}"


def issues(exc: ValidationError, root: type[BaseModel], origins: Origins) -> list[Issue]:
    from edge_agent.detectors.params import ParamProblems

    out: list[Issue] = []
    for err in exc.errors():
        loc: Path_ = tuple(p for p in err["loc"] if isinstance(p, int | str))
        msg = err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, Located):
            for sub, pmsg in cause.problems:
                out.append(Issue(dotted(loc + sub), pmsg, origins.where(loc + sub)))
            continue
        if isinstance(cause, ParamProblems):
            for param, pmsg in cause.problems:
                ploc = loc + ("params", param) if param else loc + ("params",)
                out.append(Issue(dotted(ploc), pmsg, origins.where(ploc)))
            continue
        if err["type"] == "extra_forbidden":
            parent = model_at(root, loc[:-1])
            env = origins.env_name(loc)
            if parent is not None:
                hint = suggestion(str(loc[-1]), parent.model_fields)
                if env and hint.startswith("did you mean"):
                    close = hint.split("'")[1]
                    hint = f"did you mean {env[: env.rfind('__') + 2]}{close.upper()}?"
                msg = f"unknown key ({hint})"
            else:
                msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif msg.startswith("Input should be "):
            msg = "must be " + msg[len("Input should be "):]
        elif err["type"] in ("dict_type", "model_type", "model_attributes_type"):
            msg = f"must be a section of keys (got {_short(err.get('input'))})"
        out.append(Issue(dotted(loc), msg, origins.where(loc)))
    return out


def by_place(found: list[Issue]) -> list[Issue]:
    """File issues in line order, then environment ones, then the rest."""

    def key(issue: Issue) -> tuple[int, int, str]:
        where = issue.where or ""
        if where.startswith("environment variable"):
            return (1, 0, where)
        head, _, line = where.rpartition(":")
        return (0, int(line), "") if head and line.isdigit() else (2, 0, where)

    return sorted(found, key=key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
