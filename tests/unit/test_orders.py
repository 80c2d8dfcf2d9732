"""An order's money rules (app.domain.orders), without a database."""
import pytest

from app.domain.orders import OrderMoney, OrderOverpaid, became_paid


def test_status_follows_what_was_paid_and_refunded():
    assert OrderMoney(1_000).status == "open"
    assert OrderMoney(1_000, paid=600, refunded=600).status == "open"  # not yet paid in full
    assert OrderMoney(1_000, paid=1_000).status == "paid"
    assert OrderMoney(1_000, paid=1_000, refunded=1).status == "partially_refunded"
    assert OrderMoney(1_000, paid=1_000, refunded=1_000).status == "refunded"


def test_a_reservation_counts_payments_in_flight():
    money = OrderMoney(1_000).reserve(600)
    assert (money.in_flight, money.payable) == (600, 400)
    with pytest.raises(OrderOverpaid):
        money.reserve(401)
    money = money.reserve(400)
    assert money.payable == 0
    failed = money.payment_settled(600, 0)  # a failure gives its share back
    assert (failed.in_flight, failed.paid, failed.payable) == (400, 0, 600)
    paid = failed.payment_settled(400, 400)
    assert (paid.in_flight, paid.paid, paid.status) == (0, 400, "open")


def test_a_refund_makes_no_room_for_another_payment():
    money = OrderMoney(1_000, paid=1_000).refund_succeeded(1_000)
    assert money.status == "refunded" and money.payable == 0


def test_became_paid_only_on_the_crossing():
    before = OrderMoney(1_000, paid=400, in_flight=600)
    after = before.payment_settled(600, 600)
    assert became_paid(before, after)
    assert not became_paid(after, after.refund_succeeded(100))
    assert not became_paid(OrderMoney(1_000), OrderMoney(1_000).reserve(1_000))
