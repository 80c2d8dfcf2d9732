"""The posting rules (app.domain.postings): which accounts each money movement moves, by how much,
and that every entry balances."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain import postings
from app.domain.postings import AVAILABLE, PENDING, Entry, Line, Role

A, F = 10_000, 290  # an amount and its fee, in minor units

CUSTOMER, CLEARING, SETTLEMENT, FEE_REVENUE = Role.CUSTOMER, Role.CLEARING, Role.SETTLEMENT, Role.FEE_REVENUE


def lines(entries: list[Entry]) -> list[tuple]:
    """Each entry as (kind, its lines): (role, amount) on the available balance, (role, amount,
    PENDING) on the pending one."""
    return [(entry.kind, [(line.role, line.amount) if line.balance == AVAILABLE else
                          (line.role, line.amount, line.balance) for line in entry.lines]) for entry in entries]


RULES = {  # (kind, status, in_ledger, fee) → the entries
    # A payment through a channel: clearing pays the merchant, less the fee.
    ("payment", "succeeded", False, F): [("payment", [(CLEARING, -A), (SETTLEMENT, A - F), (FEE_REVENUE, F)])],
    # From a balance, the customer account pays.
    ("payment", "succeeded", True, F): [("payment", [(CUSTOMER, -A), (SETTLEMENT, A - F), (FEE_REVENUE, F)])],
    # Without a fee it still names fee revenue (the ledger drops a zero line when it posts).
    ("payment", "succeeded", False, 0): [("payment", [(CLEARING, -A), (SETTLEMENT, A), (FEE_REVENUE, 0)])],
    # A refund goes back where the payment came from: the channel, or the customer's balance.
    ("refund", "succeeded", False, 0): [("refund", [(SETTLEMENT, -A), (CLEARING, A)])],
    ("refund", "succeeded", True, 0): [("refund", [(SETTLEMENT, -A), (CUSTOMER, A)])],
    # A top-up credits the customer from clearing; the merchant pays the fee.
    ("topup", "succeeded", False, F): [("topup", [(CLEARING, -A), (CUSTOMER, A), (SETTLEMENT, -F), (FEE_REVENUE, F)])],
    ("topup", "succeeded", False, 0): [("topup", [(CLEARING, -A), (CUSTOMER, A)])],
    # A withdrawal is paid out of its hold; the merchant pays the fee. Failed, the hold is released.
    ("withdrawal", "succeeded", False, F): [
        ("withdrawal", [(CUSTOMER, -A, PENDING), (CLEARING, A), (SETTLEMENT, -F), (FEE_REVENUE, F)])],
    ("withdrawal", "failed", False, 0): [("withdrawal_release", [(CUSTOMER, -A, PENDING), (CUSTOMER, A)])],
}


@pytest.mark.parametrize("case", RULES, ids=lambda case: "-".join(map(str, case)))
def test_a_settlement_moves_these_accounts_by_these_amounts(case):
    kind, status, in_ledger, fee = case
    assert lines(postings.settlement(kind, status, A, fee, in_ledger=in_ledger)) == RULES[case]


def test_a_withdrawal_holds_its_amount_when_created():
    assert lines([postings.withdrawal_hold(A)]) == [("withdrawal_hold", [(CUSTOMER, -A), (CUSTOMER, A, PENDING)])]


def test_a_transfer_moves_from_source_to_target():
    assert lines([postings.transfer(A)]) == [("transfer", [(Role.SOURCE, -A), (Role.TARGET, A)])]


def test_a_fee_moves_from_what_the_merchant_is_owed_to_fee_revenue_and_no_fee_moves_nothing():
    assert postings.fee_lines(F) == (Line(SETTLEMENT, -F), Line(FEE_REVENUE, F))
    assert postings.fee_lines(0) == ()


@pytest.mark.parametrize("kind", ["payment", "topup", "refund"])
def test_a_failure_moves_no_money(kind):
    assert postings.settlement(kind, "failed", A, F) == []
    assert postings.settlement(kind, "failed", A, F, in_ledger=True) == []


@pytest.mark.parametrize("kind", ["payment", "topup", "withdrawal", "refund"])
@pytest.mark.parametrize("status", ["pending", "processing"])
def test_a_status_that_is_not_final_moves_no_money(kind, status):
    assert postings.settlement(kind, status, A, F) == []


def test_an_entry_that_does_not_balance_is_refused():
    with pytest.raises(ValueError, match="does not balance"):
        Entry("payment", (Line(CLEARING, -A), Line(SETTLEMENT, A - F)))


@given(kind=st.sampled_from(["payment", "topup", "withdrawal", "refund"]),
       status=st.sampled_from(["succeeded", "failed"]), in_ledger=st.booleans(),
       amount=st.integers(1, 10**15), fee=st.integers(0, 10**9))
def test_every_entry_balances_debits_against_credits(kind, status, in_ledger, amount, fee):
    entries = postings.settlement(kind, status, amount, fee, in_ledger=in_ledger)
    entries += [postings.withdrawal_hold(amount), postings.transfer(amount)]
    for entry in entries:
        debits = -sum(line.amount for line in entry.lines if line.amount < 0)
        credits = sum(line.amount for line in entry.lines if line.amount > 0)
        assert debits == credits > 0


def test_a_reported_dispute_takes_its_amount_back_from_the_merchant_for_the_channel():
    assert lines([postings.dispute_opened(A)]) == [("dispute", [(SETTLEMENT, -A), (CLEARING, A)])]


def test_a_dispute_won_reverses_the_debit_and_one_lost_moves_nothing_more():
    assert lines(postings.dispute_closed("won", A)) == [("dispute_reversal", [(CLEARING, -A), (SETTLEMENT, A)])]
    assert postings.dispute_closed("lost", A) == []
    with pytest.raises(ValueError, match="won or lost"):
        postings.dispute_closed("needs_response", A)


@given(amount=st.integers(1, 10**15))
def test_a_won_dispute_leaves_every_account_as_before_it_and_a_lost_one_leaves_the_debit(amount):
    def net(entries):
        moved: dict = {}
        for entry in entries:
            for line in entry.lines:
                moved[line.role] = moved.get(line.role, 0) + line.amount
        return {role: total for role, total in moved.items() if total}

    opened = [postings.dispute_opened(amount)]
    assert net(opened + postings.dispute_closed("won", amount)) == {}
    assert net(opened + postings.dispute_closed("lost", amount)) == {SETTLEMENT: -amount, CLEARING: amount}
