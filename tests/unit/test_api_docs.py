"""docs/api.md cannot drift from the code: its generated tables (endpoints from the OpenAPI document,
event types, error classes, error codes) equal what docs/api_reference.py makes of the code now."""
import importlib.util
from pathlib import Path

from app.entrypoints.api.openapi import document

DOCS = Path(__file__).resolve().parents[2] / "docs"


def reference():
    spec = importlib.util.spec_from_file_location("api_reference", DOCS / "api_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_operation_of_the_openapi_document_is_in_the_reference():
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [f"{method.upper()} {path}" for path, methods in document()["paths"].items() for method in methods
               if f"`{method.upper()} {path}`" not in text]
    assert not missing, f"not in docs/api.md (run .venv/bin/python docs/api_reference.py): {missing}"


def test_the_generated_tables_are_up_to_date():
    module = reference()
    current = (DOCS / "api.md").read_text(encoding="utf-8")
    assert module.render(current, module.generated()) == current, \
        "docs/api.md is out of date: run .venv/bin/python docs/api_reference.py"
    assert module.main(["--check"]) == 0


def test_every_list_filter_is_in_the_reference():
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    names = {p["name"] for methods in document()["paths"].values() for op in methods.values()
             for p in op.get("parameters", []) if p["in"] == "query"}
    assert names and all(f"`{name}`" in text for name in names)
