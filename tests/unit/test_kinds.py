import pytest

from app.domain.kinds import EVENT_TYPES, OperationKind


def test_kinds_are_spelled_as_the_api_and_the_database_spell_them():
    assert OperationKind.values() == ("payment", "topup", "withdrawal", "refund", "transfer")
    assert OperationKind.routed() == ("payment", "topup", "withdrawal", "refund")
    assert OperationKind("topup") is OperationKind.TOPUP and OperationKind.TOPUP == "topup"
    assert f"{OperationKind.WITHDRAWAL}.paused" == "withdrawal.paused"


@pytest.mark.parametrize("kind,prefix", [("payment", "pay"), ("topup", "top"), ("withdrawal", "wd"), ("refund", "re"),
                                         ("transfer", "tr")])
def test_id_prefixes(kind, prefix):
    assert OperationKind(kind).id_prefix == prefix


def test_event_types_are_each_kinds_final_statuses_and_a_payments_own():
    assert EVENT_TYPES[:12] == ("payment.succeeded", "payment.failed", "topup.succeeded", "topup.failed",
                                "withdrawal.succeeded", "withdrawal.failed", "refund.succeeded", "refund.failed",
                                "transfer.succeeded", "payment.requires_action", "payment.requires_capture",
                                "payment.canceled")


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        OperationKind("capture")

