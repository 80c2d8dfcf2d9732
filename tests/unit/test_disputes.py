"""A dispute's statuses (app.domain.disputes): it opens needs_response and closes once, won or lost."""
import pytest

from app.domain import disputes


@pytest.mark.parametrize("reported", ["won", "lost"])
def test_an_open_dispute_closes_won_or_lost(reported):
    assert disputes.closes("needs_response", reported)


@pytest.mark.parametrize("current", ["won", "lost"])
@pytest.mark.parametrize("reported", ["needs_response", "won", "lost"])
def test_a_closed_dispute_never_changes_again(current, reported):
    assert not disputes.closes(current, reported)


def test_a_report_of_an_open_dispute_closes_nothing():
    assert not disputes.closes("needs_response", "needs_response")
