"""Load and validate a rule file (contract §3): YAML or JSON text, a path, or parsed data.

``validate`` reports every problem at once as ``Problem(rule_id, path, message, line)``;
``load`` returns a ``RuleSet`` or raises ``RulesInvalid`` carrying that list. Checks:
the JSON Schema in ``schemas/rules.schema.json`` (draft 2020-12), then static checks
(facts, types, currencies, regexes, channels, split weights, duplicate ids, conditions that
can never be true) and the durable-rules engine limits (``rules.compiler.engine_problems``).

YAML is read with booleans restricted to true/false, so ``in: [NO, SE]`` keeps Norway.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

import schemas
from app.domain.errors import InvalidRequest
from rules import parse
from rules.model import Problem, Rule, RuleSet, Then

SCHEMA_PATH = schemas.path("rules.schema.json")


class RulesInvalid(InvalidRequest):
    """The rule file has problems; ``problems`` lists every one of them."""

    code = "rules_invalid"

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        head = "; ".join(str(p) for p in self.problems[:5])
        more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{len(self.problems)} problem(s) in rule file: {head}{more}")


class _Loader(yaml.SafeLoader):
    """SafeLoader whose booleans are only true/false (YAML 1.1 would turn NO, on, y into bools)."""


_Loader.yaml_implicit_resolvers = {
    key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


@lru_cache(maxsize=1)
def schema_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _read_text(source: Any) -> str | None:
    if isinstance(source, Path):
        return source.read_text(encoding="utf-8")
    if isinstance(source, bytes):
        return source.decode("utf-8")
    if isinstance(source, str):
        if "\n" not in source and source.endswith((".yaml", ".yml", ".json")) and os.path.exists(source):
            return Path(source).read_text(encoding="utf-8")
        return source
    return None


MAX_NODES = 100_000  # values in a rule file once its aliases are expanded (a real one has hundreds)
MAX_DEPTH = 64  # nesting of lists and mappings (a real one has under 10)


class _TooBig(Exception):
    pass


def _walk_lines(node: yaml.Node, path: str, lines: dict[str, int], dups: list[tuple[str, int]],
                budget: list[int] | None = None) -> None:
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:  # "billion laughs": 9 aliases of 9 aliases... (425 bytes) walked forever
        raise _TooBig(f"the file holds more than {MAX_NODES} values once its aliases are expanded")
    if path.count("/") > MAX_DEPTH:  # deeper: a RecursionError in the checks that follow
        raise _TooBig(f"the file nests lists or mappings more than {MAX_DEPTH} deep")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}/{key}"
            if key in seen:
                dups.append((child, key_node.start_mark.line + 1))
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _walk_lines(value_node, child, lines, dups, budget)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_lines(item, f"{path}/{i}", lines, dups, budget)


def read_document(source: Any) -> tuple[Any, dict[str, int], list[Problem]]:
    """Parse ``source`` into plain data plus a path → line map. Problems on syntax errors."""
    if isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json")) \
            and not os.path.exists(source):
        return None, {}, [Problem(None, "", f"no such rule file: {source}")]
    text = _read_text(source)
    if text is None:
        return source, {}, []
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            return None, {}, [Problem(None, "", "the file is empty")]
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:  # the parser itself recurses: "[" 1,000 deep
        return None, {}, [Problem(None, "", f"the file nests lists or mappings more than {MAX_DEPTH} deep")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, {}, [Problem(None, "", f"not valid YAML/JSON: {exc}", mark.line + 1 if mark else None)]
    lines: dict[str, int] = {}
    dups: list[tuple[str, int]] = []
    try:
        _walk_lines(node, "", lines, dups)
    except _TooBig as exc:
        return None, {}, [Problem(None, "", str(exc))]
    problems = [Problem(None, p, "duplicate key", line) for p, line in dups]
    return data, lines, problems


def _line_for(path: str, lines: dict[str, int]) -> int | None:
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path.rsplit("/", 1)[0]


def _rule_id_for(path: str, data: Any) -> str | None:
    m = re.match(r"^/rules/(\d+)", path)
    if not m or not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        return None
    rules = data["rules"]
    i = int(m.group(1))
    rule = rules[i] if i < len(rules) else None
    return rule.get("id") if isinstance(rule, dict) and isinstance(rule.get("id"), str) else None


def _schema_problems(data: Any) -> list[tuple[str, str]]:
    out = []
    for error in schema_validator().iter_errors(data):
        if error.context:  # oneOf/anyOf: the most specific branch error says the most
            error = jsonschema.exceptions.best_match(error.context) or error
        path = "".join(f"/{p}" for p in error.absolute_path)
        out.append((path, f"schema: {error.message}"))
    return out


def _parse(data: Any, known: set[str] | None, out: parse.Collector) -> RuleSet | None:
    if not isinstance(data, dict):
        out.add("", "a rule file is an object with 'rules' (a list) and optional 'defaults'")
        return None
    for key in data:
        if key not in ("rules", "defaults"):
            out.add(f"/{key}", f"unknown top-level key {key!r}")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list):
        out.add("/rules", "'rules' must be a list")
        raw_rules = []
    rules: list[Rule] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(raw_rules):
        path = f"/rules/{i}"
        out.rule_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        if not isinstance(raw, dict):
            out.add(path, "a rule must be an object {id, priority, when, then}")
            continue
        for key in raw:
            if key not in ("id", "priority", "when", "then"):
                out.add(f"{path}/{key}", f"unknown rule key {key!r}")
        rid, priority = raw.get("id"), raw.get("priority", 0)
        if not isinstance(rid, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$", rid):
            out.add(f"{path}/id", f"id must be a short string of letters, digits, _ . : -, got {rid!r}")
        elif rid in first_seen:
            out.add(f"{path}/id", f"duplicate id {rid!r} (first used by rules/{first_seen[rid]})")
        else:
            first_seen[rid] = i
        if type(priority) is not int or not -1_000_000 <= priority <= 1_000_000:
            out.add(f"{path}/priority", f"priority must be an integer in ±1000000, got {priority!r}")
        for key in ("when", "then"):
            if key not in raw:
                out.add(path, f"missing {key!r}")
        when = parse.condition(raw["when"], f"{path}/when", out) if "when" in raw else None
        then = parse.then(raw["then"], f"{path}/then", out, known) if "then" in raw else None
        if when is not None and then is not None and isinstance(rid, str) and type(priority) is int:
            rules.append(Rule(rid, priority, when, then, index=len(rules)))
    out.rule_id = None
    defaults = Then()
    if "defaults" in data:
        defaults = parse.then(data["defaults"], "/defaults", out, known, defaults=True) or Then()
    return RuleSet(tuple(rules), defaults)


def check(source: Any, known_channels: set[str] | None = None) -> tuple[RuleSet | None, list[Problem]]:
    """Parse and validate; returns the rule set (``None`` if any problem) and every problem."""
    data, lines, problems = read_document(source)
    if problems and data is None:
        return None, problems
    out = parse.Collector()
    ruleset = _parse(data, known_channels, out)
    found = [(p, m, rid) for rid, p, m in out.items]
    covered = {p for p, _, _ in found}
    for path, message in _schema_problems(data):
        if not any(path.startswith(c) or c.startswith(path) for c in covered if c):
            found.append((path, message, _rule_id_for(path, data)))
    if not found and ruleset is not None:
        from rules.compiler import engine_problems  # late import: compiler depends on the model only

        found.extend((p.path, p.message, p.rule_id) for p in engine_problems(ruleset))
    problems += [Problem(rid if rid is not None else _rule_id_for(p, data), p, m, _line_for(p, lines))
                 for p, m, rid in found]
    if problems:
        return None, problems
    lined = tuple(Rule(r.id, r.priority, r.when, r.then, r.index, _line_for(f"/rules/{r.index}", lines))
                  for r in ruleset.rules)
    return RuleSet(lined, ruleset.defaults), []


def validate(source: Any, known_channels: set[str] | None = None) -> list[Problem]:
    """Every problem of a rule file (empty list: valid)."""
    return check(source, known_channels)[1]


def load(source: Any, known_channels: set[str] | None = None) -> RuleSet:
    """A valid ``RuleSet`` or ``RulesInvalid`` listing every problem."""
    ruleset, problems = check(source, known_channels)
    if problems:
        raise RulesInvalid(problems)
    return ruleset


# The same booleans, parsed by libyaml when it is installed: for stored (already valid) versions, whose
# lines nobody needs, several times faster than the pure-Python parser above (docs/benchmarks.md).
_FastLoader = type("_FastLoader", (getattr(yaml, "CSafeLoader", yaml.SafeLoader),), {})
_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def data_of(text: str) -> Any:
    """The plain data of a stored rule file (no line map, no problems: it was valid when stored)."""
    return yaml.load(text, Loader=_FastLoader)  # noqa: S506 - a SafeLoader


def to_data(source: Any) -> Any:
    """The plain data of a rule file (for storage as JSON by the publishing side)."""
    return read_document(source)[0]
