"""The OpenAPI document is built from the schemas the API validates with, and describes every answer."""
import json

from jsonschema import Draft202012Validator

from app.services.validation import api_schema
from tests import builders


def test_openapi_document(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    post = doc["paths"]["/v1/transfers"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[-1]
    assert doc["components"]["schemas"][name]["required"] == api_schema()["$defs"]["transfer_create"]["required"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in post["parameters"])
    for path_item in doc["paths"].values():
        for op in path_item.values():
            for target in _refs(op):
                assert target.rsplit("/", 1)[-1] in doc["components"]["schemas"], target


def test_every_merchant_route_is_documented(app, client):
    doc = client.get("/openapi.json").get_json()
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        path = rule.rule.replace("<object_id>", "{id}")
        path = "/".join("{id}" if part.startswith("<") else part for part in path.split("/"))
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, (method, path)


def test_every_merchant_view_says_what_it_takes_and_answers(app):
    """The document is built from the routes: each /v1 view carries its @documented, and the served
    document holds those routes and nothing else."""
    from app.entrypoints.api.openapi import Described, described_routes, document

    v1 = [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/v1/")]
    assert v1
    for rule in v1:
        assert isinstance(getattr(app.view_functions[rule.endpoint], "openapi", None), Described), rule.rule
    routes = {(method, path) for method, path, _ in described_routes(app)}
    assert routes == {(m, p) for p, item in document(app)["paths"].items() for m in item}
    assert len(routes) == sum(len(rule.methods - {"HEAD", "OPTIONS"}) for rule in v1)


def test_an_undescribed_merchant_route_cannot_be_documented():
    """A /v1 route without @documented is refused when the document is built, not left out of it."""
    import pytest
    from flask import Blueprint, Flask

    from app.entrypoints.api.openapi import ListOf, Undescribed, build, documented

    bp = Blueprint("scratch", __name__)
    bp.add_url_rule("/v1/things", "list_things", documented("List things", answers=ListOf("account"))(lambda: ""))
    bp.add_url_rule("/v1/things/<thing_id>", "get_thing", lambda thing_id: "")
    bp.add_url_rule("/healthz", "probe", lambda: "")  # outside the document: needs nothing
    app = Flask(__name__)
    app.register_blueprint(bp)
    with pytest.raises(Undescribed, match="/v1/things/<thing_id>"):
        build(app)


def test_api_schemas_are_valid_json_schema():
    Draft202012Validator.check_schema(api_schema())


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _doc():
    from app.entrypoints.api import openapi

    return openapi.document()


def _operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield method, path, op


def test_every_operation_describes_its_answers(client):
    doc = client.get("/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    for method, path, op in _operations(doc):
        success = [code for code in op["responses"] if code.startswith("2")]
        assert len(success) == 1, (method, path)
        content = op["responses"][success[0]]["content"]
        if "text/csv" in content:  # a report
            assert list(content) == ["text/csv"] and content["text/csv"]["schema"]["type"] == "string"
        else:
            schema = content["application/json"]["schema"]
            target = schema["$ref"].rsplit("/", 1)[-1] if "$ref" in schema else None
            if target is None:  # the list envelope
                assert schema["properties"]["object"] == {"const": "list"} and "has_more" in schema["required"]
                target = schema["properties"]["data"]["items"]["$ref"].rsplit("/", 1)[-1]
            assert schemas[target]["required"] and schemas[target]["properties"], (method, path)
        for code in ("400", "401", "404", "default"):
            assert op["responses"][code] == {"$ref": "#/components/responses/Error"}, (method, path, code)
        if method == "post" and path != "/v1/routing/simulate":
            key = next(p for p in op["parameters"] if p["name"] == "Idempotency-Key")
            assert key["required"] and key["schema"]["maxLength"] == 255 and key["schema"]["pattern"]
    error = schemas["Error"]["properties"]["error"]
    assert set(error["required"]) == {"type", "code", "message", "request_id"} and "param" in error["properties"]


def test_list_parameters_and_amounts_have_their_form(client):
    doc = client.get("/openapi.json").get_json()
    lists = [(p, op) for m, p, op in _operations(doc) if m == "get" and "items" in json.dumps(
        op["responses"]["200"]["content"].get("application/json", {}).get("schema"))]
    assert lists
    for path, op in lists:
        params = {p["name"]: p["schema"] for p in op["parameters"]}
        assert params["starting_after"]["pattern"] == "^[a-z]+_[A-Za-z0-9]+$", path
        assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, 100), path
    amounts = list(_named(doc, "amount"))
    assert amounts and all(a.get("type") == "integer" for a in amounts), amounts


def test_request_bodies_are_the_validation_schemas_each_self_contained(client):
    doc = client.get("/openapi.json").get_json()
    for _method, _path, op in _operations(doc):
        body = op.get("requestBody")
        if body:
            name = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
            schema = doc["components"]["schemas"][name]
            assert not list(_refs(schema)), name  # one schema per body, nothing to follow
            assert schema["properties"].keys() == api_schema()["$defs"][name]["properties"].keys()


def test_answers_match_their_documented_schemas(stack):
    """Objects as the API answers them today (the fuzz test does this for generated requests)."""
    doc = _doc()
    api = builders.api(stack.client)
    funded, other = api.account(funded=1000), api.account(reference=builders.unique())
    transfer = api.post("/v1/transfers", api.transfer_body(funded["id"], other["id"], 10)).get_json()
    payment = api.post("/v1/payments", builders.payment_body(500)).get_json()
    checks = [("account", funded), ("account", other), ("transfer", transfer), ("payment", payment),
              ("account_list", api.get("/v1/accounts").get_json()),
              ("ledger_entry_list", api.get(f"/v1/accounts/{funded['id']}/entries").get_json()),
              ("event_list", api.get("/v1/events").get_json()),
              ("payment_list", api.get("/v1/payments").get_json()),
              ("Error", api.get("/v1/accounts/acct_nope").get_json())]
    for name, body in checks:
        if name.endswith("_list"):
            schema = {"$ref": f"#/components/schemas/{name[:-5]}"}
            schema = {"type": "object", "required": ["object", "data", "has_more"],
                      "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": schema}}}
            assert body["data"], name
        else:
            schema = {"$ref": f"#/components/schemas/{name}"}
        validator = Draft202012Validator({**schema, "components": doc["components"]},
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, (name, errors)


def _named(node, name):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict) and name in value:
                yield value[name]
            yield from _named(value, name)
    elif isinstance(node, list):
        for value in node:
            yield from _named(value, name)
