import pytest

from app.api.validation import list_params, parse_body
from app.domain.errors import InvalidRequest

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
    assert list_params({}) == (10, None)
