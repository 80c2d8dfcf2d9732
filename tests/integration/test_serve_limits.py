"""What the production server (gunicorn, `payrouter serve`) refuses before the app sees a request is
answered in the contract's error shape, not gunicorn's HTML page: a request line over its limit
(raised to gunicorn's maximum, 8,190 bytes) is 414 ``uri_too_long``, headers over theirs 431
``request_headers_too_large``; a URL under the limit reaches the app, which answers as it does."""
import requests

from tests.live import api_server


def _contract_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:200])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code), error
    assert error["message"] and error["request_id"].startswith("req_")
    assert response.headers["X-Request-Id"] == error["request_id"]


def test_too_long_a_url_or_too_large_headers_are_contract_errors_and_a_long_url_under_the_limit_is_served(clean):
    with api_server(clean, workers=1, threads=2) as base:
        # 6,000 bytes: over gunicorn's default (4,094), under the maximum: the app answers (no key: 401).
        served = requests.get(f"{base}/v1/payments?reference=" + "r" * 6000, timeout=10)
        assert served.status_code == 401 and served.json()["error"]["code"] == "invalid_api_key", served.text[:200]
        _contract_error(requests.get(f"{base}/v1/payments?reference=" + "r" * 9000, timeout=10), 414, "uri_too_long")
        _contract_error(requests.get(f"{base}/v1/payments", headers={"X-Big": "b" * 9000}, timeout=10), 431,
                        "request_headers_too_large")
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200  # the worker serves on
