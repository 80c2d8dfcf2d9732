"""The one table from error class to HTTP status and contract type (app.entrypoints.api.errors)."""
import pytest

from app.domain import errors as e
from app.entrypoints.api.errors import ERROR_MAP, status_and_type


def test_no_row_is_hidden_behind_an_earlier_one():
    """Most specific first: a row after one of its base classes could never decide."""
    for index, (cls, _status, _kind) in enumerate(ERROR_MAP):
        earlier = [base for base, _, _ in ERROR_MAP[:index] if issubclass(cls, base)]
        assert not earlier, (cls, earlier)


@pytest.mark.parametrize("error, status", [
    (e.InvalidRequest("bad", code="parameter_invalid"), 400),
    (e.Unprocessable("reference is already used", code="reference_already_used"), 422),
    (e.Unprocessable("refunds would exceed", code="refund_exceeds_payment"), 422),
    (e.Conflict("state"), 409),
    (e.IdempotencyMismatch(), 422),
    (e.NoRoute(), 402),
])
def test_the_status_comes_from_the_class(error, status):
    assert status_and_type(error)[0] == status
