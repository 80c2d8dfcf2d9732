"""An adapter's answer made fit to record (app.adapters.channel_answers): what the integration tests
(tests/integration/test_adapter_answers.py) cannot cheaply drive through a payment."""
from __future__ import annotations

import datetime as dt

import pytest

from app.adapters.channel_answers import MARK, RAW_DEPTH, TEXT_LIMITS, AdapterFault, fit, raw_fit, text_fit
from channels.base import ChannelResult


class Unprintable:
    def __str__(self):
        raise RuntimeError("no")

    def __eq__(self, other):
        raise RuntimeError("no")

    __hash__ = object.__hash__


def test_a_nesting_deeper_than_any_stack_is_marked_not_a_recursion_error():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    raw = raw_fit({"deep": deep})
    level, depth = raw["deep"], 1
    while isinstance(level, list):
        level, depth = level[0], depth + 1
    assert (level, depth) == ("<nested too deep>", RAW_DEPTH)


def test_an_object_that_cannot_say_what_it_is_or_compare_is_named_by_its_type():
    result = fit("c", ChannelResult("succeeded", "ref", raw={"x": Unprintable(), Unprintable(): 1}))
    assert result.raw == {"x": "<Unprintable>", "<Unprintable>": 1}


def test_text_is_cut_to_its_limit_with_the_mark_and_short_text_is_untouched():
    assert text_fit("abc", 3) == "abc"
    assert text_fit("abcd", 3) == "ab" + MARK
    assert text_fit("a\x00b", 60) == "a\ufffdb"


@pytest.mark.parametrize("fields", [
    {"capture_before": "tomorrow"},
    {"next_action": "redirect"},
    {"amount_captured": True},
    {"amount_captured": -1},
])
def test_a_field_of_the_wrong_type_is_an_adapter_fault_keeping_the_reference(fields):
    with pytest.raises(AdapterFault) as raised:
        fit("c", ChannelResult("requires_capture", "r" * 300, **fields))
    assert raised.value.code == "adapter_fault" and raised.value.channel_reference == "r" * 199 + MARK


def test_a_well_formed_answer_keeps_its_values():
    result = ChannelResult("requires_action", "ref", raw={"a": [1, 2.5, None]}, next_action={"url": "https://x"},
                           capture_before=dt.datetime(2026, 12, 6))
    assert fit("c", result) == result


def test_the_operations_columns_are_as_wide_as_the_attempts():
    from app.adapters.models import Operation

    widths = {"channel_reference": "channel_reference", "error_code": "failure_code",
              "error_message": "failure_message"}
    assert TEXT_LIMITS == {name: Operation.__table__.c[column].type.length for name, column in widths.items()}
