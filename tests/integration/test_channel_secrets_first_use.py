"""A process whose test channels have no stored secret yet (``payrouter init`` not run on this
database) creates them when it starts, not inside the first payment's transaction: on SQLite that
transaction holds the only write lock, and the nested insert answered 503 "database is locked"."""
from __future__ import annotations

from sqlalchemy import func, select

from app.adapters.db import read_only
from app.adapters.models import ChannelSecret
from tests import builders


def test_the_first_payment_of_a_fresh_database_is_not_refused(client):
    with read_only() as session:  # the app factory created them, before any request
        assert session.scalar(select(func.count()).select_from(ChannelSecret)) > 0
    api = builders.api(client)
    # No sandbox listens: the channel call is refused, which proves nothing was charged (a channel fault).
    response = api.post("/v1/payments", builders.payment_body(2000))
    assert response.status_code in (201, 402), response.get_json()
    assert response.get_json().get("error", {}).get("code") != "service_unavailable"
