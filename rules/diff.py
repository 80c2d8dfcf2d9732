"""Rule-by-rule difference between two rule files (contract §3 ``rules diff``), on plain data.

Rules are matched by id. A changed rule lists its changed fields as dotted paths
(``then.fee.percent``) with the value before and after; lists (a route, the items of an
``all``) compare as one value, so a field names what a reader would edit.
"""
from __future__ import annotations

from typing import Any

_ABSENT = None


def _fields(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and not obj and not prefix:
        return {}
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_fields(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: obj}


def field_changes(before: Any, after: Any) -> list[dict]:
    """``[{field, before, after}]`` for every dotted field that differs (absent: None)."""
    a, b = _fields(before or {}), _fields(after or {})
    changes = []
    for name in list(a) + [k for k in b if k not in a]:
        if a.get(name, _ABSENT) != b.get(name, _ABSENT) or (name in a) != (name in b):
            changes.append({"field": name, "before": a.get(name, _ABSENT), "after": b.get(name, _ABSENT)})
    return changes


def _rules(data: Any) -> dict[str, dict]:
    rules = data.get("rules") if isinstance(data, dict) else None
    return {r["id"]: r for r in rules or () if isinstance(r, dict) and isinstance(r.get("id"), str)}


def diff(before: Any, after: Any) -> dict:
    """What ``after`` changes relative to ``before`` (both parsed rule files; None: empty).

    ``{"added": [{id, rule}], "removed": [{id, rule}], "changed": [{id, fields}], "defaults": [fields],
    "unchanged": [ids], "summary": "1 added, 1 removed, 1 changed"}``
    """
    old, new = _rules(before), _rules(after)
    added = [{"id": rid, "rule": rule} for rid, rule in new.items() if rid not in old]
    removed = [{"id": rid, "rule": rule} for rid, rule in old.items() if rid not in new]
    changed, unchanged = [], []
    for rid, rule in new.items():
        if rid in old:
            fields = field_changes({k: v for k, v in old[rid].items() if k != "id"},
                                   {k: v for k, v in rule.items() if k != "id"})
            (changed.append({"id": rid, "fields": fields}) if fields else unchanged.append(rid))
    defaults = field_changes((before or {}).get("defaults") if isinstance(before, dict) else None,
                             (after or {}).get("defaults") if isinstance(after, dict) else None)
    parts = [f"{len(added)} added", f"{len(removed)} removed", f"{len(changed)} changed"]
    if defaults:
        parts.append("defaults changed")
    return {"added": added, "removed": removed, "changed": changed, "defaults": defaults,
            "unchanged": unchanged, "summary": ", ".join(parts)}


def render(result: dict) -> str:
    """The diff as text, one line per rule and per field (the CLI's ``rules diff``)."""
    lines = []
    for item in result["added"]:
        lines.append(f"+ {item['id']}  (added)")
    for item in result["removed"]:
        lines.append(f"- {item['id']}  (removed)")
    for item in result["changed"]:
        lines.append(f"~ {item['id']}")
        lines.extend(f"    {f['field']}: {_show(f['before'])} → {_show(f['after'])}" for f in item["fields"])
    if result["defaults"]:
        lines.append("~ defaults")
        lines.extend(f"    {f['field']}: {_show(f['before'])} → {_show(f['after'])}" for f in result["defaults"])
    lines.append(result["summary"])
    return "\n".join(lines)


def _show(value: Any) -> str:
    import json

    return "(none)" if value is None else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
