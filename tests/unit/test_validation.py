import json

import pytest

from app.domain.errors import InvalidRequest
from app.services.listing import ListQuery
from app.services.validation import api_schema, list_params, parse_body, query_params, screen

GOOD = {"from_account": "acct_a1", "to_account": "acct_b2", "amount": 100, "currency": "USD", "reference": "r1"}


def err(raw: bytes, name="transfer_create") -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_body(raw, name)
    return info.value


def test_good_body_passes():
    import json

    assert parse_body(json.dumps(GOOD).encode(), "transfer_create") == GOOD


@pytest.mark.parametrize("raw,param,code", [
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":100,"currency":"USD","reference":"r","x":1}',
     "x", "parameter_unknown"),
    (b'{"to_account":"acct_b2","amount":100,"currency":"USD","reference":"r"}', "from_account", "parameter_missing"),
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":1.5,"currency":"USD","reference":"r"}',
     "amount", "parameter_invalid"),
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":100.0,"currency":"USD","reference":"r"}',
     "amount", "parameter_invalid"),
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":-5,"currency":"USD","reference":"r"}',
     "amount", "parameter_invalid"),
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":0,"currency":"USD","reference":"r"}',
     "amount", "parameter_invalid"),
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":100,"currency":"XXX","reference":"r"}',
     "currency", "parameter_invalid"),
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":100,"currency":"usd","reference":"r"}',
     "currency", "parameter_invalid"),
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":"100","currency":"USD","reference":"r"}',
     "amount", "parameter_invalid"),
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":true,"currency":"USD","reference":"r"}',
     "amount", "parameter_invalid"),
    (b'{"from_account":"acct_a1","to_account":"acct_b2","amount":10000000000000000,"currency":"USD","reference":"r"}',
     "amount", "parameter_invalid"),
])
def test_bad_fields_name_their_param(raw, param, code):
    error = err(raw)
    assert (error.param, error.code) == (param, code)
    assert param in error.message


def test_overlong_reference():
    import json

    error = err(json.dumps({**GOOD, "reference": "r" * 201}).encode())
    assert error.param == "reference"


def test_nested_unknown_field_is_named():
    raw = b'{"currency":"USD","customer":{"id":"c1","shoe_size":"42"}}'
    error = err(raw, "account_create")
    assert error.param == "customer[shoe_size]" and error.code == "parameter_unknown"


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b"null", b'{"a": NaN}', b"\xff\xfe", b'"text"'])
def test_malformed_json(raw):
    error = err(raw)
    assert error.code in ("invalid_json",)


def test_card_needs_its_fields():
    raw = (b'{"amount":100,"currency":"USD","reference":"r","payment_method":{"type":"card","brand":"visa"}}')
    error = err(raw, "payment_create")
    assert error.param == "payment_method[country]"


@pytest.mark.parametrize("args,param", [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"),
                                        ({"limit": "x"}, "limit"), ({"page": "2"}, "page")])
def test_list_params(args, param):
    with pytest.raises(InvalidRequest) as info:
        list_params(args)
    assert info.value.param == param


def test_list_defaults():
    assert list_params({}) == ListQuery(limit=10)


# Bad input is a 4xx: strings that no text column takes and numbers no integer column holds are refused
# with their param by the one parser every body goes through.
@pytest.mark.parametrize("raw,param", [
    (b'{"currency":"USD","customer":{"id":"a\\u0000"}}', "customer[id]"),
    (b'{"currency":"USD","customer":{"id":"\\ud83d"}}', "customer[id]"),
    (b'{"currency":"USD","customer":{"id":"\\ude00x"}}', "customer[id]"),
    (b'{"currency":"USD","customer":{"id":"c"},"metadata":{"\\u0000":"v"}}', "metadata[\\x00]"),
    (b'{"currency":"USD","customer":{"id":"c"},"metadata":{"k":"\\u0000"}}', "metadata[k]"),
    (b'{"currency":"USD","customer":{"id":"c"},"extra":[1, "\\ud800"]}', "extra[1]"),
    (b'{"currency":"USD","customer":{"id":"c"},"n":1e1000}', "n"),
    (b'{"currency":"USD","customer":{"id":"c"},"n":1e99999999999999999999999999}', "n"),
    (b'{"currency":"USD","customer":{"id":"c"},"n":-0.5e-99999999999999999999999999}', "n"),
    (b'{"currency":"USD","customer":{"id":"c"},"n":1.0e19}', "n"),
    (b'{"currency":"USD","customer":{"id":"c"},"n":9223372036854775808}', "n"),
    (b'{"currency":"USD","customer":{"id":"c"},"n":-9223372036854775809}', "n"),
    (b'{"currency":"USD","customer":{"id":"c"},"n":' + b"9" * 5000 + b"}", "n"),
])
def test_bad_text_and_huge_numbers_are_parameter_invalid(raw, param):
    error = err(raw, "account_create")
    assert (error.code, error.param) == ("parameter_invalid", param)


def test_a_surrogate_pair_is_one_good_character():
    body = parse_body(b'{"currency":"USD","customer":{"id":"\\ud83d\\ude00"}}', "account_create")
    assert body["customer"]["id"] == "\U0001f600"


def test_64_bit_integers_and_small_decimals_still_reach_the_schema():
    assert err(json.dumps({**GOOD, "amount": 2**63 - 1}).encode()).param == "amount"  # above the schema's maximum
    error = err(json.dumps({**GOOD, "amount": 1.5}).encode())
    assert "not an integer" in error.message


@pytest.mark.parametrize("raw", [b'{"a": "\xed\xa0\x80"}', b'{"a": "\xff"}', b'{"a": "\xc3"}',
                                 '{"a": 1}'.encode("utf-16"), b"\xef\xbb\xbf{}"])
def test_bodies_must_be_strict_utf8(raw):
    assert err(raw).code == "invalid_json"


def test_deep_nesting_is_refused_not_a_crash():
    assert err(b'{"a":' * 40 + b"1" + b"}" * 40).code == "invalid_json"
    assert err(b"[" * 100000 + b"]" * 100000).code in ("invalid_json", "body_too_large")


@pytest.mark.parametrize("path,query,view_args,param", [
    (b"/v1/accounts/acct_\x00", b"", {"account_id": "acct_\x00"}, "id"),
    (b"/v1/accounts/acct_\xed\xa0\x80", b"", {"account_id": "acct_\ufffd\ufffd\ufffd"}, "id"),
    (b"/v1/nothing/\xff", b"", None, "path"),
    (b"/v1/accounts", b"starting_after=%00", None, "starting_after"),
    (b"/v1/accounts", b"starting_after=%ED%A0%80", None, "starting_after"),
    (b"/v1/accounts", b"limit=1&st%FFarting=1", None, "st\ufffdarting"),
])
def test_screen_refuses_bad_paths_and_queries(path, query, view_args, param):
    with pytest.raises(InvalidRequest) as info:
        screen(path, query, view_args)
    assert (info.value.code, info.value.param) == ("parameter_invalid", param)


def test_screen_lets_good_text_through():
    screen("/v1/accounts/acct_é".encode(), "starting_after=acct_1&x=%E2%82%AC+1".encode(), {"account_id": "acct_é"})


def _columns():
    from app.adapters.models import Account, Operation, Transfer
    from app.adapters.webhook_models import WebhookEndpoint

    return [
        (("account_create", "reference"), Account.reference),
        (("transfer_create", "reference"), Transfer.reference),
        (("payment_create", "reference"), Operation.reference),
        (("payment_create", "description"), Operation.description),
        (("refund_create", "reason"), Operation.reason),
        (("webhook_endpoint_create", "url"), WebhookEndpoint.url),
        (("webhook_endpoint_create", "description"), WebhookEndpoint.description),
        (("object_id",), Account.id),
        (("object_id",), Operation.account_id),
        (("object_id",), Transfer.from_account_id),
        (("currency",), Operation.currency),
    ]


@pytest.mark.parametrize("where,column", _columns(), ids=lambda v: ".".join(v) if isinstance(v, tuple) else str(v))
def test_schema_lengths_match_the_columns(where, column):
    """A string the schema lets through fits its column: a longer one is a 400 here, not a database error."""
    defs = api_schema()["$defs"]
    node = defs[where[0]]
    for name in where[1:]:
        node = node["properties"][name]
    if "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    length = column.property.columns[0].type.length
    if "enum" in node:
        assert max(map(len, node["enum"])) <= length
    else:
        assert node["maxLength"] == length, (where, node.get("maxLength"), length)


@pytest.mark.parametrize("body, param", [
    ({"currency": "USD", "customer": {"id": "a"}, "metadata": {f"key{i}": "v" * 100 for i in range(51)}}, "metadata"),
    ({"currency": "USD", "customer": {"id": "x" * 5000}}, "customer[id]"),
])
def test_an_error_message_quotes_a_refused_value_only_in_part(body, param):
    with pytest.raises(InvalidRequest) as refused:
        parse_body(json.dumps(body).encode(), "account_create")
    assert refused.value.param == param
    assert len(refused.value.message) < 200, refused.value.message


def test_query_params_is_the_one_check_of_a_query():
    """Lists and the operator API refuse what they do not take, and bound limit, in one place."""
    assert query_params({"channel": "x"}, {"channel", "issues"}, default_limit=20) == 20
    assert query_params({"limit": "100"}, {"channel"}, default_limit=20) == 100
    for args, param, code in (({"nope": "1"}, "nope", "parameter_unknown"), ({"limit": "101"}, "limit", None),
                              ({"limit": "٣"}, "limit", None), ({"b": "1", "a": "1"}, "a", "parameter_unknown")):
        with pytest.raises(InvalidRequest) as info:
            query_params(args, {"channel"}, default_limit=20)
        assert info.value.param == param and info.value.code == (code or "parameter_invalid")
    with pytest.raises(InvalidRequest) as info:  # a query that takes no limit
        query_params({"limit": "5"}, {"channel"})
    assert (info.value.param, info.value.code) == ("limit", "parameter_unknown")


def test_currencies_are_the_domains():
    """The schema's currency enum is app.domain.money's list: a currency added there is accepted here."""
    from app.domain.money import CURRENCY_EXPONENTS

    for currency in CURRENCY_EXPONENTS:
        assert parse_body(json.dumps({**GOOD, "currency": currency}).encode(), "transfer_create")
    error = err(json.dumps({**GOOD, "currency": "XXX"}).encode())
    assert (error.param, error.code) == ("currency", "parameter_invalid") and "AED" in error.message
    assert api_schema()["$defs"]["currency"]["enum"] == list(CURRENCY_EXPONENTS)


def test_operation_kinds_and_event_types_are_the_domains():
    from app.domain.kinds import EVENT_TYPES, OperationKind

    simulate = {"amount": 100, "currency": "USD", "payment_method": {"type": "wallet"}}
    for kind in OperationKind.routed():
        assert parse_body(json.dumps({**simulate, "kind": kind, "type": kind}).encode(), "simulate")
    error = err(json.dumps({**simulate, "kind": "transfer"}).encode(), "simulate")  # nothing routes a transfer
    assert (error.param, error.code) == ("kind", "parameter_invalid")
    events = api_schema()["$defs"]["webhook_endpoint_create"]["properties"]["enabled_events"]["items"]["enum"]
    assert events == ["*", *EVENT_TYPES]
    endpoint = {"url": "https://example.com/hook", "enabled_events": ["*", *EVENT_TYPES]}
    assert parse_body(json.dumps(endpoint).encode(), "webhook_endpoint_create")
    error = err(json.dumps({**endpoint, "enabled_events": ["payment.exploded"]}).encode(), "webhook_endpoint_create")
    assert error.param == "enabled_events[0]"


def _patterns(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return found.union(*(_patterns(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_patterns(value) for value in node))
    return set()


def test_the_fast_validator_accepts_no_string_a_pattern_refuses():
    """A body jsonschema-rs finds valid is not shown to Python's jsonschema (validation._fast_validator):
    every pattern must then refuse under jsonschema-rs whatever Python's ``re`` refuses. Every
    character up to U+3100 (and a few beyond), alone and beside what the patterns look for."""
    import re

    import jsonschema_rs

    characters = [chr(c) for c in range(0x3100) if not 0xD800 <= c <= 0xDFFF] + ["\ufeff", "\uffff", "\U0001f600"]
    patterns = _patterns(api_schema())
    assert len(patterns) >= 9
    for pattern in patterns:
        fast = jsonschema_rs.Draft202012Validator({"type": "string", "pattern": pattern})
        python = re.compile(pattern)
        accepted_only_fast = [text for c in characters for text in (c, f"a{c}@b", f"a@b{c}", f"tok_{c}", f"AB{c}")
                              if fast.is_valid(text) and python.search(text) is None]
        assert accepted_only_fast == [], pattern


@pytest.mark.parametrize("email", ["a\x1c@b", "a@b\x1f", "a\x85@b", "a b@c"])
def test_an_email_with_white_space_as_python_reads_it_is_refused(email):
    body = {"currency": "USD", "customer": {"id": "c1", "email": email}}
    error = err(json.dumps(body).encode(), "account_create")
    assert (error.param, error.code) == ("customer[email]", "parameter_invalid")


def test_a_whole_number_written_with_a_fraction_is_refused_where_an_integer_is_wanted():
    for amount in (b"100.0", b"1e2", b"100.00"):  # parsed as Decimal, which jsonschema-rs would take for an integer
        raw = b'{"from_account":"acct_a1","to_account":"acct_b2","amount":%s,"currency":"USD","reference":"r"}' % amount
        assert (err(raw).param, err(raw).code) == ("amount", "parameter_invalid")
