"""The generated parts of docs/api.md: the endpoint index (from the OpenAPI document the server
serves) and the error classes (from the one error map), so the reference cannot drift from the code.

    .venv/bin/python docs/api_reference.py          # rewrite the generated blocks of docs/api.md
    .venv/bin/python docs/api_reference.py --check  # exit 1 if they differ (tests/unit/test_api_docs.py)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

API_MD = Path(__file__).with_name("api.md")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _answers(op: dict, status: str) -> str:
    content = op["responses"][status]["content"]
    if "text/csv" in content:
        return "CSV"
    schema = content["application/json"]["schema"]
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[1]}`"
    return f"list of `{schema['properties']['data']['items']['$ref'].rsplit('/', 1)[1]}`"


def endpoints(document: dict) -> str:
    """One row per operation: method and path, what it does, its body, its query, what it answers."""
    rows = ["| endpoint | what it does | body | query | answers |", "| --- | --- | --- | --- | --- |"]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            status = next(code for code in op["responses"] if code.startswith("2"))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            body_name = f"`{body['$ref'].rsplit('/', 1)[1]}`" if "$ref" in body else ""
            if body_name and not op["requestBody"].get("required", False):
                body_name += " (optional)"
            query = ", ".join(f"`{p['name']}`" + ("*" if p.get("required") else "")
                              for p in op.get("parameters", []) if p["in"] == "query")
            rows.append(f"| `{method.upper()} {path}` | {_cell(op['summary'])} | {body_name} | {query} | "
                        f"{status} {_answers(op, status)} |")
    return "\n".join(rows)


def errors() -> str:
    """One row per error class (app/domain/errors.py), as the one error map answers it: its status,
    type, default code and meaning."""
    from app.domain import errors as domain
    from app.entrypoints.api.errors import status_and_type

    classes = [cls for cls in vars(domain).values()
               if isinstance(cls, type) and issubclass(cls, domain.PayRouterError)]
    rows = ["| status | type | code (default) | meaning |", "| --- | --- | --- | --- |"]
    for status, kind, code, doc in sorted((*status_and_type(cls()), cls.code, (cls.__doc__ or "").strip())
                                          for cls in classes):
        rows.append(f"| {status} | `{kind}` | `{code}` | {_cell(doc)} |")
    return "\n".join(rows)


_CODE = re.compile(r"""\bcode\s*=\s*["']([a-z][a-z0-9_]*)["']""")
ROOT = Path(__file__).resolve().parent.parent


def codes() -> str:
    """Every error code the code base names (``code="…"``), with the modules that raise it: a code
    added anywhere shows up here, and its meaning belongs in the hand-written table above."""
    found: dict[str, set[str]] = {}
    for folder in ("app", "channels", "rules"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for code in _CODE.findall(path.read_text(encoding="utf-8")):
                found.setdefault(code, set()).add(path.relative_to(ROOT).as_posix())
    rows = ["| code | named in |", "| --- | --- |"]
    rows += [f"| `{code}` | {', '.join(sorted(files))} |" for code, files in sorted(found.items())]
    return "\n".join(rows)


def events() -> str:
    """The event types (app/domain/kinds.py), one per line."""
    from app.domain.kinds import EVENT_TYPES

    return "\n".join(f"- `{name}`" for name in EVENT_TYPES)


def generated() -> dict[str, str]:
    from app.entrypoints.api.openapi import document

    return {"endpoints": endpoints(document()), "events": events(), "errors": errors(), "codes": codes()}


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated:{name} .*?-->\n)(.*?)(<!-- /generated:{name} -->)", re.S)


def render(text: str, blocks: dict[str, str]) -> str:
    """``text`` with each generated block replaced by its content."""
    for name, content in blocks.items():
        if not _block(name).search(text):
            raise SystemExit(f"docs/api.md has no generated block {name!r}")
        text = _block(name).sub(lambda m, content=content: m.group(1) + content + "\n" + m.group(3), text)
    return text


def main(argv: list[str]) -> int:
    current = API_MD.read_text(encoding="utf-8")
    wanted = render(current, generated())
    if "--check" in argv:
        if wanted != current:
            print("docs/api.md is out of date: run .venv/bin/python docs/api_reference.py", file=sys.stderr)
            return 1
        return 0
    API_MD.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main(sys.argv[1:]))
