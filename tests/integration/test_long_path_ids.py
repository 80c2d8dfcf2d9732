"""A POST to an object's action with an id longer than any object id names no object: 404, as any
unknown id, never a 500. The Idempotency-Key claim stores the request path before the id is looked
up, and PostgreSQL refused a path longer than that column (200) with 'value too long'."""
import pytest

from tests import builders

LONG = "a" * 300


@pytest.mark.parametrize("path, body", [
    (f"/v1/webhook_endpoints/we_{LONG}/rotate_secret", {}),
    (f"/v1/events/evt_{LONG}/redeliver", {}),
    (f"/v1/test_helpers/accounts/acct_{LONG}/fund", {"amount": 1}),
])
def test_an_action_on_a_very_long_id_is_404_not_500(client, path, body):
    api = builders.api(client)
    first = api.post(path, body, key="long-path")
    assert first.status_code == 404, first.get_json()
    assert first.get_json()["error"]["param"] == "id"
    again = api.post(path, body, key="long-path")
    assert again.get_data() == first.get_data() and again.headers.get("Idempotent-Replayed") == "true"
