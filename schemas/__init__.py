"""The JSON Schemas: every API body (api.schema.json) and rule sets (rules.schema.json).

A package, so that a plain (non-editable) install carries them as package data.
"""
from pathlib import Path

DIR = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """The file of schema ``name`` (e.g. "api.schema.json")."""
    return DIR / name
