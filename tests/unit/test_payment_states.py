"""A payment's own statuses (app.domain.states) and what they post (app.domain.postings): authorize
and void move nothing, a capture posts the payment's success of what it captured."""
import pytest

from app.domain import postings
from app.domain.postings import Role
from app.domain.states import FINAL, OPEN, allowed


@pytest.mark.parametrize("current,target", [
    ("processing", "requires_action"), ("processing", "requires_capture"),
    ("requires_action", "succeeded"), ("requires_action", "failed"), ("requires_action", "requires_capture"),
    ("requires_action", "canceled"), ("requires_capture", "succeeded"), ("requires_capture", "canceled"),
])
def test_a_payment_may_wait_and_end_so(current, target):
    assert allowed(current, target, "payment")


@pytest.mark.parametrize("current,target", [
    ("requires_capture", "failed"), ("requires_capture", "requires_action"), ("canceled", "succeeded"),
    ("succeeded", "canceled"), ("pending", "requires_capture"), ("processing", "canceled"),
])
def test_nothing_else(current, target):
    assert not allowed(current, target, "payment")


@pytest.mark.parametrize("kind", ["topup", "withdrawal", "refund"])
def test_the_new_statuses_are_the_payments_only(kind):
    assert not allowed("processing", "requires_capture", kind)
    assert not allowed("processing", "requires_action", kind)
    assert allowed("processing", "succeeded", kind)


def test_final_and_open():
    assert FINAL == {"succeeded", "failed", "canceled"}
    assert OPEN == {"processing", "requires_action", "requires_capture"}


def test_authorize_and_void_post_nothing_a_capture_posts_what_it_took():
    assert postings.authorized(10_000) == [] and postings.voided(10_000) == []
    assert postings.settlement("payment", "requires_capture", 10_000, 300) == []
    assert postings.settlement("payment", "canceled", 10_000, 300) == []
    (entry,) = postings.captured(6_000, 180)
    assert entry.kind == "payment"
    assert [(line.role, line.amount) for line in entry.lines] == [
        (Role.CLEARING, -6_000), (Role.SETTLEMENT, 5_820), (Role.FEE_REVENUE, 180)]
