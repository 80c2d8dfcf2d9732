"""The plugin kit checks that an adapter's results fit what the router stores of them: its limits
are the attempts table's column widths (the kit may not import the router's adapters)."""
from app.adapters.models import Attempt
from channels.testing.contract import RESULT_LIMITS


def test_the_kits_limits_are_the_attempt_columns():
    assert RESULT_LIMITS == {name: Attempt.__table__.c[name].type.length for name in RESULT_LIMITS}
