"""The plugin kit checks that an adapter's results, callbacks and dispute notices fit what the router
stores of them: its limits are the attempts', the callback inbox's and the disputes' column widths
(the kit may not import the router's adapters)."""
from app.adapters.models import Attempt, ChannelCallback, Dispute
from channels.testing.contract import CALLBACK_LIMITS, DISPUTE_LIMITS, RESULT_LIMITS


def test_the_kits_limits_are_the_attempt_columns():
    assert RESULT_LIMITS == {name: Attempt.__table__.c[name].type.length for name in RESULT_LIMITS}


def test_the_kits_callback_and_dispute_limits_are_the_inbox_and_dispute_columns():
    assert CALLBACK_LIMITS == {name: ChannelCallback.__table__.c[name].type.length for name in CALLBACK_LIMITS}
    assert DISPUTE_LIMITS == {name: Dispute.__table__.c[name].type.length for name in DISPUTE_LIMITS}
