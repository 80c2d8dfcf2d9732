"""Which attempt a verified callback may settle (app.services.callbacks.attempt_mismatch)."""
from types import SimpleNamespace

from app.services.callbacks import attempt_mismatch


def attempt(channel: str, channel_reference: str | None):
    return SimpleNamespace(channel=channel, channel_reference=channel_reference)


def test_the_reference_the_attempt_recorded_on_that_channel_matches():
    assert attempt_mismatch("acq_a", "sbx_1", [attempt("acq_a", "sbx_1")]) is None
    # after a failover, the earlier channel's callback still matches its own attempt
    assert attempt_mismatch("acq_a", "sbx_1", [attempt("acq_a", "sbx_1"), attempt("acq_b", "sbx_9")]) is None


def test_another_reference_or_a_channel_never_tried_does_not():
    assert "reference" in attempt_mismatch("acq_a", "sbx_2", [attempt("acq_a", "sbx_1")])
    assert attempt_mismatch("acq_a", None, [attempt("acq_a", "sbx_1")]) is not None
    assert "no attempt" in attempt_mismatch("acq_b", "sbx_1", [attempt("acq_a", "sbx_1")])
    assert attempt_mismatch("acq_a", "sbx_1", []) is not None  # an unknown operation


def test_an_attempt_whose_answer_never_came_takes_the_callbacks_reference():
    assert attempt_mismatch("acq_a", "sbx_7", [attempt("acq_a", None)]) is None
