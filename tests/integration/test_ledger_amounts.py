"""The ledger guards its amounts itself (docs/design.md, "Money"): a line's amount is an int of
minor units, its currency is its account's, and an entry balances in each currency."""
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.adapters.db import unit_of_work
from app.adapters.models import JournalEntry
from app.services import ledger
from tests import builders


@pytest.mark.parametrize("amount", [1.0, Decimal(1), True, "1"])
def test_an_amount_that_is_not_an_int_of_minor_units_is_refused(clean, amount):
    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:
        settlement = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
        fees = ledger.system_account(session, merchant_id, ledger.FEE_REVENUE, "USD")
        with pytest.raises(ledger.UnbalancedEntry):
            ledger.post(session, merchant_id=merchant_id, kind="test", source_id=None,
                        legs=[ledger.Leg(settlement, -1), ledger.Leg(fees, amount)])
        assert session.scalar(select(func.count()).select_from(JournalEntry)
                              .where(JournalEntry.merchant_id == merchant_id)) == 0


def test_an_entry_balanced_only_across_currencies_is_refused(clean):
    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:
        usd = ledger.system_account(session, merchant_id, ledger.MERCHANT_SETTLEMENT, "USD")
        eur = ledger.system_account(session, merchant_id, ledger.FEE_REVENUE, "EUR")
        with pytest.raises(ledger.UnbalancedEntry, match="does not balance"):
            ledger.post(session, merchant_id=merchant_id, kind="test", source_id=None,
                        legs=[ledger.Leg(usd, -100), ledger.Leg(eur, 100)])
        usd_fees = ledger.system_account(session, merchant_id, ledger.FEE_REVENUE, "USD")
        ledger.post(session, merchant_id=merchant_id, kind="test", source_id=None,
                    legs=[ledger.Leg(usd, -100), ledger.Leg(usd_fees, 100)])
        assert session.scalar(select(func.count()).select_from(JournalEntry)
                              .where(JournalEntry.merchant_id == merchant_id)) == 1
