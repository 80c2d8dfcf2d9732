"""Load and validate a rule file (contract §3): YAML or JSON text, a path, or parsed data.

``validate`` reports every problem at once as ``Problem(rule_id, path, message, line)``;
``load`` returns a ``RuleSet`` or raises ``RulesInvalid`` carrying that list. Checks:
the JSON Schema in ``schemas/rules.schema.json`` (draft 2020-12), the one statement of a file's
shape, its refusals put in an author's words here; then what a schema cannot say (``rules.parse``:
facts and their values, currencies, regexes, channels, split sums, duplicate ids, conditions that
can never be true) and the durable-rules engine limits (``rules.compiler.engine_problems``).

YAML is read with booleans restricted to true/false, so ``in: [NO, SE]`` keeps Norway.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from string import Template
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


# What the schema refuses, in the words a rule author reads: keyed by the schema node that refused
# (a $defs name, "file" for the top level, "<def>.<property>" for a property written in place,
# "<def>.*" for the values of a map). The schema is the one statement of a rule file's shape;
# rules/parse.py checks only what it cannot say (facts and their values, channels, sums, bounds
# between fields, duplicates, conditions that can never be true).
_UNKNOWN_KEY = {
    "file": "unknown top-level key {key!r}",
    "rule": "unknown rule key {key!r}",
    "then": "unknown key {key!r} (allowed: {allowed})",
    "defaults": "unknown key {key!r} (allowed: {allowed})",
    "fee": "unknown fee key {key!r}",
    "limits": "unknown limit {key!r}",
    "retry": "unknown retry key {key!r} (allowed: on, max)",
    "route_strategy": "unknown route key {key!r} (allowed: {allowed})",
}
_DAILY = "expected {per: customer|merchant, max: non-negative integer}"
_SPLIT = "split takes {channel: positive integer weight}"
_ROUTE = "route takes a non-empty list of channel ids"
_ROUTE_STRATEGY = ("route takes a list of channel ids or {strategy: priority|cost|success_rate, channels: [ids], "
                   "window_minutes?, min_samples?, exploration_percent?}")
# node → (message, how many path steps up the problem is reported: the field, not a part of it); a message
# is a string.Template of $value (its repr), $key (the field's name) and $kind (the value, or "a number")
_SHAPES: dict[str, tuple[str, int]] = {
    "file": ("a rule file is an object with 'rules' (a list) and optional 'defaults'", 0),
    "file.rules": ("'rules' must be a list", 0),
    "rule": ("a rule must be an object {id, priority, when, then}", 0),
    "id": ("id must be a short string of letters, digits, _ . : -, got $value", 0),
    "rule.priority": ("priority must be an integer in ±1000000, got $value", 0),
    "then": ("expected an object with some of: decline, route, split, fee, limits, retry", 0),
    "defaults": ("expected an object with some of: route, split, fee, retry", 0),
    "then.decline": ("decline takes a snake_case code such as country_blocked", 0),
    "route": (_ROUTE_STRATEGY, 0),
    "route_list": (_ROUTE, 0),
    "route_strategy": (_ROUTE_STRATEGY, 0),
    "route_strategy.strategy": ("strategy is one of priority, cost, success_rate, got $value", 0),
    "route_strategy.window_minutes": ("window_minutes is an integer from 1 to 240, got $value", 0),
    "route_strategy.min_samples": ("min_samples is an integer from 1 to 100000, got $value", 0),
    "route_strategy.exploration_percent": ("exploration_percent is an integer from 0 to 50, got $value", 0),
    "split": (_SPLIT, 0),
    "split.*": (_SPLIT, 1),
    "fee": ("fee must be an object {percent, fixed, min, max}", 0),
    "percent": ('percent must be a decimal string like "2.9", got $kind (no floats)', 0),
    "minor": ("$key must be a non-negative integer in minor units, got $value", 0),
    "daily": (_DAILY, 0),
    "daily.per": (_DAILY, 1),
    "limits": ("limits must be a non-empty object", 0),
    "retry": ("retry must be an object {on: [decline codes], max: 1-10}", 0),
    "retry.on": ("retry.on takes a non-empty list of snake_case decline codes such as issuer_unavailable", 0),
    "decline_code": ("a decline code is snake_case, such as issuer_unavailable, got $value", 0),
    "retry.max": ("retry.max is the number of extra attempts: an integer from 1 to 10, got $value", 0),
    "scalars": ("$key takes a non-empty list", 0),
    "condition.exists": ("exists takes true or false, got $value", 0),
    "condition.matches": ("matches takes a non-empty regular expression string", 0),
}
_RAW = "schema: "  # a refusal with no words of ours: jsonschema's message follows
_SHAPE_CHECKS = {"type", "pattern", "minimum", "maximum", "minItems", "minProperties", "minLength", "enum",
                 "required", "additionalProperties", "propertyNames"}


@lru_cache(maxsize=1)
def _node_names() -> dict[int, str]:
    schema = schema_validator().schema
    names = {id(schema): "file"}
    for prop, node in schema["properties"].items():
        names.setdefault(id(node), f"file.{prop}")
    for name, node in schema["$defs"].items():
        names[id(node)] = name
    for name, node in schema["$defs"].items():
        for prop, sub in node.get("properties", {}).items():
            names.setdefault(id(sub), f"{name}.{prop}")
        if isinstance(node.get("additionalProperties"), dict):
            names.setdefault(id(node["additionalProperties"]), f"{name}.*")
    return names


def _in_words(error: jsonschema.ValidationError) -> list[tuple[str, str]]:
    parts = [str(p) for p in error.absolute_path]
    path = "".join(f"/{p}" for p in parts)
    name = _node_names().get(id(error.schema))
    value = error.instance
    if error.validator == "additionalProperties" and name in _UNKNOWN_KEY:
        allowed = list(error.schema.get("properties", {}))
        return [(f"{path}/{key}", _UNKNOWN_KEY[name].format(key=key, allowed=", ".join(allowed)))
                for key in value if key not in allowed]
    if error.validator == "required" and name == "file":  # the one required key: rules
        return [(f"/{key}", _SHAPES[f"file.{key}"][0]) for key in error.validator_value if key not in value]
    if error.validator == "required" and name == "rule":  # a rule without an id is told what an id is
        return [(f"{path}/id", Template(_SHAPES["id"][0]).substitute(value=None)) if key == "id"
                else (path, f"missing {key!r}") for key in error.validator_value if key not in value]
    if name == "channel":  # a route's channel, or a split's channel name
        name, parts = ("route", parts[:-1]) if parts and parts[-1].isdigit() else ("split", parts)
        path = "".join(f"/{p}" for p in parts)
        return [(path, _ROUTE if name == "route" else _SPLIT)]
    if error.validator == "not" and name in ("then", "defaults"):  # not both route and split
        return [(path, "route and split are exclusive")] if isinstance(value, dict) else []
    if name == "minor" and len(parts) > 1 and parts[-2] in ("daily_amount", "daily_count"):
        name = "daily.per"  # a daily limit's max: the limit is named, as for its other parts
    if name in _SHAPES and error.validator in _SHAPE_CHECKS:
        message, up = _SHAPES[name]
        key = parts[-1] if parts else ""
        kind = "a number" if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        return [("".join(f"/{p}" for p in parts[:len(parts) - up]),
                 Template(message).safe_substitute(value=repr(value), key=key, kind=kind))]
    return [(path, f"{_RAW}{error.message}")]


def _schema_problems(data: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for error in schema_validator().iter_errors(data):
        if error.context and _node_names().get(id(error.schema)) == "route":
            # a list or {strategy, channels, ...}: the branch of the value's own shape says what is wrong
            branch = 0 if isinstance(error.instance, list) else 1 if isinstance(error.instance, dict) else None
            errors = [e for e in error.context if e.schema_path and e.schema_path[0] == branch]
            for each in errors:
                out.extend(problem for problem in _in_words(each) if problem not in out)
            if not errors:
                out.append(("".join(f"/{p}" for p in error.absolute_path), _ROUTE_STRATEGY))
            continue
        if error.context:  # oneOf/anyOf: the most specific branch error says the most
            error = jsonschema.exceptions.best_match(error.context) or error
        out.extend(problem for problem in _in_words(error) if problem not in out)
    return out


def _said_better(path: str, message: str, covered: set[str]) -> bool:
    """Whether a check of rules/parse.py already tells a schema problem better: the schema's own words
    ("schema: …", on conditions and values whose facts those checks read) give way to a check's problem
    anywhere above or below it; a problem put in an author's words, only to one at the same place."""
    if message.startswith(_RAW):
        return any(path.startswith(c) or c.startswith(path) for c in covered if c)
    return path in covered


def _parse(data: Any, known: set[str] | None, out: parse.Collector) -> RuleSet | None:
    """The model of ``data``, with the problems only code can find; its shape (keys, types, forms) is the
    schema's to check (``_schema_problems``), so what does not fit it is skipped here without a word."""
    if not isinstance(data, dict):
        return None
    raw_rules = data.get("rules")
    rules: list[Rule] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(raw_rules if isinstance(raw_rules, list) else []):
        path = f"/rules/{i}"
        out.rule_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        if not isinstance(raw, dict):
            continue
        rid, priority = raw.get("id"), raw.get("priority", 0)
        if isinstance(rid, str) and rid in first_seen:
            out.add(f"{path}/id", f"duplicate id {rid!r} (first used by rules/{first_seen[rid]})")
        elif isinstance(rid, str):
            first_seen[rid] = i
        when = parse.condition(raw["when"], f"{path}/when", out) if "when" in raw else None
        then = parse.then(raw["then"], f"{path}/then", out, known) if "then" in raw else None
        if when is not None and then is not None and isinstance(rid, str) and type(priority) is int:
            rules.append(Rule(rid, priority, when, then, index=len(rules)))
    out.rule_id = None
    defaults = Then()
    if "defaults" in data:
        defaults = parse.then(data["defaults"], "/defaults", out, known) or Then()
    return RuleSet(tuple(rules), defaults)


MERCHANT_FEE = "a merchant's rule set cannot set a fee: fees come only from the platform set"


def _merchant_then(obj: Any, path: str, unusable: Mapping[str, str], found: list) -> None:
    if not isinstance(obj, dict):
        return
    if "fee" in obj:
        found.append((f"{path}/fee", MERCHANT_FEE, None))
    route, rpath = obj.get("route"), f"{path}/route"
    if isinstance(route, dict):
        route, rpath = route.get("channels"), f"{rpath}/channels"
    named = [(f"{rpath}/{i}", ch) for i, ch in enumerate(route)] if isinstance(route, list) else []
    split = obj.get("split")
    named += [(f"{path}/split/{ch}", ch) for ch in split] if isinstance(split, dict) else []
    for where, ch in named:
        if isinstance(ch, str) and ch in unusable:
            found.append((where, f"channel {ch!r} cannot be used by this merchant: {unusable[ch]}", None))


def merchant_problems(data: Any, unusable: Mapping[str, str]) -> list[tuple[str, str, None]]:
    """What a merchant's own set may not say (contract §3): a ``fee`` (only the platform charges), or a
    channel the merchant cannot use (``unusable``: channel → why)."""
    found: list = []
    if not isinstance(data, dict):
        return found
    for i, raw in enumerate(data.get("rules") if isinstance(data.get("rules"), list) else []):
        if isinstance(raw, dict):
            _merchant_then(raw.get("then"), f"/rules/{i}/then", unusable, found)
    _merchant_then(data.get("defaults"), "/defaults", unusable, found)
    return found


def check(source: Any, known_channels: set[str] | None = None,
          unusable: Mapping[str, str] | None = None) -> tuple[RuleSet | None, list[Problem]]:
    """Parse and validate; returns the rule set (``None`` if any problem) and every problem.
    ``unusable``: given for a merchant's own set, the channels that merchant cannot use (with why)."""
    data, lines, problems = read_document(source)
    if problems and data is None:
        return None, problems
    out = parse.Collector()
    ruleset = _parse(data, known_channels, out)
    found = [(p, m, rid) for rid, p, m in out.items]
    if unusable is not None:
        found += merchant_problems(data, unusable)
    covered = {p for p, _, _ in found}
    for path, message in _schema_problems(data):
        if not _said_better(path, message, covered):
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
