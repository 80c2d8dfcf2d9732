"""POST /v1/routing/simulate: the decision an operation's create would take on the body it is sent, with
no side effect. Each kind reads what its create reads, with the create's own functions
(app.services.payments): a payment's balance account and order are checked; a top-up's or withdrawal's
account gives its customer; a refund's payment gives its currency, its customer, by default what is left of
it, and its channel."""
from __future__ import annotations

from app.adapters.db import read_only
from app.domain.errors import InvalidRequest, LimitExceeded, NoRoute, RuleDeclined, Unprocessable
from app.services import payments, routing
from app.services.validation import api_schema

# What a simulated body may say beyond its kind's create body: the kind, and facts given as they are (a
# customer, an amount and currency that no account or payment named in the body gives).
BEYOND_THE_BODY = ("kind", "type", "amount", "currency", "customer")


def simulate(merchant, kind: str, body: dict, key: str) -> dict:
    """The routing decision (``Decision.to_dict``) for ``body`` of an operation of ``kind``."""
    _refuse_other_kinds_fields(kind, body)
    routing.require_instrument(kind, body)
    if kind == "refund" and body.get("payment"):
        return _refund(merchant, body, key)
    body, account = _as_the_operation_sees_it(merchant, kind, body)
    decision = routing.decide(kind, merchant, body, amount=body["amount"], currency=body["currency"],
                              split_key=key, availability=routing.availability_for(kind, body, merchant.livemode))
    if kind == "payment" and account is not None:  # a balance payment, inside the ledger: no channel
        if decision.outcome != "decline" and body.get("order"):  # its order checked after the rules, as created
            with read_only() as session:
                payments.order_terms(session, merchant, body, hold=False)
        return payments.as_shown(decision, payments.ledger_only_view(decision))
    return decision.to_dict()


def _refuse_other_kinds_fields(kind: str, body: dict) -> None:
    """A field the create body of ``kind`` does not take (a payment's ``destination``, a top-up's ``payment``)
    is 400 ``parameter_unknown``, as that create would answer, rather than read or ignored."""
    taken = api_schema()["$defs"][f"{kind}_create"]["properties"]
    foreign = sorted(name for name in body if name not in taken and name not in BEYOND_THE_BODY)
    if foreign:
        raise InvalidRequest(f"Received unknown parameter: {foreign[0]} (a {kind}'s body does not take it)",
                             param=foreign[0], code="parameter_unknown")


def _as_the_operation_sees_it(merchant, kind: str, body: dict) -> tuple[dict, object]:
    """``body`` checked as its create checks it before deciding, and with the customer that create decides on:
    a payment's balance account and order (``payment_terms``, ``order_terms`` only checking it: a balance
    payment's after the decision, as create_payment does); a top-up's or
    withdrawal's ``account`` (404, 422 ``currency_mismatch``) gives its customer. A body naming none of
    these is decided as sent. Answers the body and the account it names (a balance payment's), or None."""
    if kind == "topup":
        payments.refuse_balance_topup(body)
    reads = body.get("account") or body.get("order") or (body.get("payment_method") or {}).get("type") == "balance"
    if not reads:
        return body, None
    with read_only() as session:
        if kind == "payment":
            account = payments.payment_terms(session, merchant, body)
            if account is None:  # a payment through a channel: its order is held before it is decided
                payments.order_terms(session, merchant, body, hold=False)
            return body, account
        account = payments.account_in(session, merchant, body)
    return {**body, "customer": account.customer}, account


def _refund(merchant, body: dict, key: str) -> dict:
    """A refund of ``body["payment"]`` decided as ``create_refund`` decides it: a decline (by the rules, or
    the payment's channel unable to refund) is the decision its 402 would carry; a route shows the
    payment's channel and the refund's fee."""
    with read_only() as session:
        payment, amount = payments.refund_terms(session, merchant, body)
    if body.get("currency", payment.currency) != payment.currency:
        raise Unprocessable(f"payment {payment.id} is in {payment.currency}", param="currency",
                            code="currency_mismatch")
    try:
        decision, view = payments.refund_decision(merchant, body, payment, amount, key)
    except (RuleDeclined, LimitExceeded, NoRoute) as refused:
        return refused.extra["decision"]
    payments.refund_fits(payment, amount)  # after the decision, as create_refund's reservation
    return {**payments.as_shown(decision, view), "fee": payments.REFUND_FEE}
