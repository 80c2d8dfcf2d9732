"""/v1/payments, /v1/topups, /v1/withdrawals, /v1/refunds: create, retrieve, list."""
from flask import Blueprint, g, request

from app.domain.kinds import OperationKind
from app.entrypoints.api.common import create, listing, read
from app.entrypoints.api.openapi import ListOf, documented
from app.services import capture, payments
from app.services.operations import view, view_all

bp = Blueprint("payments", __name__)

CREATORS = {
    "payments": (OperationKind.PAYMENT, "payment_create", payments.create_payment),
    "topups": (OperationKind.TOPUP, "topup_create", payments.create_topup),
    "withdrawals": (OperationKind.WITHDRAWAL, "withdrawal_create", payments.create_withdrawal),
    "refunds": (OperationKind.REFUND, "refund_create", payments.create_refund),
}


def _create(collection: str):
    _kind, schema, creator = CREATORS[collection]
    key = request.headers.get("Idempotency-Key")

    def made(s, body):
        result = creator(s, g.merchant, body, key)
        return 201, view(s, result.operation, result.attempts)

    return create(schema, made)


def _list(collection: str):
    kind = CREATORS[collection][0]

    def fetch(s, query):
        page = payments.list_operations(s, g.merchant, kind, query)
        return view_all(s, page.items), page.has_more

    listed = _listed(kind)
    return listing(fetch, f"/v1/{collection}", listed.filters, listed.statuses)


def _listed(kind: str) -> ListOf:
    """A list of operations of ``kind``, with the filters it takes."""
    return ListOf(kind, payments.list_filters(kind), tuple(sorted(payments.list_statuses(kind))))


def _get(collection: str, object_id: str):
    kind = CREATORS[collection][0]
    return read(lambda s: view(s, payments.get_operation(s, g.merchant, kind, object_id)))


for _collection, (_kind, _schema, _) in CREATORS.items():
    bp.add_url_rule(f"/v1/{_collection}", f"create_{_collection}", documented(
        f"Create a {_kind}", body=_schema, answers=_kind, status=201)(lambda c=_collection: _create(c)),
        methods=["POST"])
    bp.add_url_rule(f"/v1/{_collection}", f"list_{_collection}", documented(
        f"List {_collection}", answers=_listed(_kind))(lambda c=_collection: _list(c)), methods=["GET"])
    bp.add_url_rule(f"/v1/{_collection}/<object_id>", f"get_{_collection}", documented(
        f"Retrieve a {_kind}", answers=_kind)(lambda object_id, c=_collection: _get(c, object_id)), methods=["GET"])


def _payment_action(schema: str, act):
    """An idempotent POST on a payment whose body is optional (checked against ``schema`` when given)."""
    def execute(s, body):
        result = act(s, g.merchant, body)
        return 200, view(s, result.operation, result.attempts)

    return create(schema, execute, body_optional=True)


@bp.post("/v1/payments/<payment_id>/capture")
@documented("Capture an authorized payment (requires_capture), in full or in part; the rest is released",
            optional_body="payment_capture", answers="payment")
def capture_payment(payment_id):
    return _payment_action("payment_capture", lambda s, merchant, body: capture.capture_payment(
        s, merchant, payment_id, body))


@bp.post("/v1/payments/<payment_id>/cancel")
@documented("Cancel a payment: void its authorization (requires_capture) or abandon its customer's step "
            "(requires_action)", optional_body="payment_cancel", answers="payment")
def cancel_payment(payment_id):
    return _payment_action("payment_cancel", lambda s, merchant, body: capture.cancel_payment(
        s, merchant, payment_id, body))
