"""rules.diff (rule by rule, field by field) and the fast parser of stored versions."""
from app.services.rules_store import DEFAULT_RULES
from rules import format
from rules.diff import diff, render


def test_stored_versions_parse_the_same_with_the_fast_loader():
    text = DEFAULT_RULES.read_text()
    assert format.data_of(text) == format.to_data(text)
    assert format.data_of("in: [NO, SE, on, y]\nok: true\n") == {"in": ["NO", "SE", "on", "y"], "ok": True}


def test_diff_names_added_removed_and_changed_fields():
    before = {"rules": [{"id": "a", "priority": 1, "when": {"fact": "amount", "gt": 1}, "then": {"decline": "x"}},
                        {"id": "b", "priority": 2, "when": {"fact": "amount", "gt": 2},
                         "then": {"route": ["p"], "fee": {"percent": "1.0", "fixed": 0}}}],
              "defaults": {"route": ["s"]}}
    after = {"rules": [{"id": "b", "priority": 3, "when": {"fact": "amount", "gt": 2},
                        "then": {"route": ["q", "p"], "fee": {"percent": "1.0", "fixed": 5, "min": 1}}},
                       {"id": "c", "priority": 1, "when": {"fact": "amount", "lt": 9}, "then": {"decline": "y"}}],
             "defaults": {"route": ["s"]}}
    result = diff(before, after)
    assert [r["id"] for r in result["added"]] == ["c"] and [r["id"] for r in result["removed"]] == ["a"]
    assert result["changed"] == [{"id": "b", "fields": [
        {"field": "priority", "before": 2, "after": 3},
        {"field": "then.route", "before": ["p"], "after": ["q", "p"]},
        {"field": "then.fee.fixed", "before": 0, "after": 5},
        {"field": "then.fee.min", "before": None, "after": 1}]}]
    assert result["defaults"] == [] and result["summary"] == "1 added, 1 removed, 1 changed"
    assert "    then.fee.min: (none) → 1" in render(result)
    first = diff(None, after)
    assert len(first["added"]) == 2 and first["defaults"] == [{"field": "route", "before": None, "after": ["s"]}]
