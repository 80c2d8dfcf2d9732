"""The OpenAPI document is built from the schemas the API validates with."""
from jsonschema import Draft202012Validator

from app.api.validation import api_schema


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
