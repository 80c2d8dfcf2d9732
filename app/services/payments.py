"""支付 充值 提现 退款: create payments, top-ups, withdrawals and refunds.

Each create: guard (switches) → routing decision (402 if refused, nothing written) →
velocity limits reserved → the operation written as pending then processing, with any
hold, in one transaction (a payment or top-up: inserted as processing with its first
channel) → the channel loop (app.services.operations). A create that is
retried after its process died resumes the operation it already wrote (same
Idempotency-Key) instead of starting another.
"""
from __future__ import annotations

import contextlib

import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app import context
from app.adapters.db import add_unique
from app.adapters.models import Merchant, Operation, new_id
from app.domain import postings
from app.domain.errors import (
    IdempotencyMismatch,
    InvalidRequest,
    LimitExceeded,
    LimitUnavailable,
    NoRoute,
    NotFound,
    PaymentDeclined,
    ServiceUnavailable,
    Unprocessable,
)
from app.domain.kinds import OperationKind
from app.domain.states import OPERATION_TRANSITIONS, PENDING, PROCESSING, SUCCEEDED
from app.services import disputes, ledger, orders, routing, switches
from app.services.accounts import get_account
from app.services.listing import ListQuery, Page, page
from app.services.operations import Made, release_limits, run_channels, settle
from app.services.transitions import transition
from rules.decide import STRATEGY_KEYS


def guard(kind: str) -> None:
    """An operation paused by ops answers 503 (read-only mode is refused for every write in app.entrypoints.api)."""
    if switches.is_on(f"operation:{kind}"):
        raise ServiceUnavailable(f"{kind} operations are paused; retry later.", code="operation_paused",
                                 retry_after=switches.RETRY_AFTER_SECONDS)


def without_token(method: dict) -> tuple[dict, str | None]:
    """A payment method as the operation keeps it (stored, answered, in events and webhooks), and its
    card token apart: the token goes to the channel's adapter and nowhere else (contract §1)."""
    if "token" not in method:
        return method, None
    return {k: v for k, v in method.items() if k != "token"}, method["token"]


def _resume(session: Session, merchant: Merchant, key: str, kind: str) -> Made | None:
    """Only a request that took over a dead request's claim (same key, same body) resumes the
    operation that request wrote, answering with it as it is; everything else starts afresh. (It
    is never pending: a new operation is committed only once it is processing, with its first
    attempt, and then status queries settle it.)"""
    if not session.info.get("idempotency_takeover"):
        return None
    op = session.scalars(select(Operation).where(Operation.merchant_id == merchant.id, Operation.kind == kind,
                                                 Operation.livemode == merchant.livemode,
                                                 Operation.idempotency_key == key)).first()
    return Made(op) if op is not None else None


def _reserve(decision, facts: dict, amount: int, currency: str, livemode: bool = False):
    """The decision completed (a ``success_rate`` route's scores) and its daily limits reserved, both in
    one Redis round trip (``routing.complete``): (decision, reservation as stored, or None)."""
    from rules import limits

    pending = None
    if any(k in (decision.limits or {}) for k in ("daily_amount", "daily_count")):
        pending = limits.prepare(decision.limits, _counted_in_mode(facts, livemode), amount, currency)
    decision, answer = routing.complete(decision, pending)
    if pending is None:
        return decision, None
    try:
        reservation = limits.settle(pending, answer)
    except LimitExceeded as exc:
        exc.extra["decision"] = {**decision.to_dict(), "outcome": "decline", "decline_code": "limit_exceeded"}
        raise
    except redis.RedisError as exc:  # refuse rather than move money past an unchecked limit
        raise LimitUnavailable("velocity limits cannot be checked right now; retry later",
                               decision={**decision.to_dict(), "outcome": "decline",
                                         "decline_code": "limit_unavailable"}) from exc
    return decision, reservation.to_dict()


def _counted_in_mode(facts: dict, livemode: bool) -> dict:
    """The facts daily limits count by: a live operation's customer and merchant ids marked
    ``live:``, so test and live operations have their own counters (testing never uses up a
    merchant's live limits)."""
    if not livemode:
        return facts
    marked = {scope: {**facts[scope], "id": f"live:{facts[scope]['id']}"} for scope in ("customer", "merchant")
              if isinstance((facts.get(scope) or {}).get("id"), str)}
    return {**facts, **marked}


def _write(session: Session, op: Operation) -> None:
    if add_unique(session, op):
        return
    earlier = session.execute(select(Operation.id, Operation.livemode).where(
        Operation.merchant_id == op.merchant_id, Operation.idempotency_key == op.idempotency_key)).first()
    if earlier:  # (an object of the other mode is not named: its id answers 404 to this key)
        made = earlier.id if earlier.livemode == op.livemode else "an object in the other mode"
        raise IdempotencyMismatch(f"This Idempotency-Key created {made} more than a day ago; use a new key.")
    raise Unprocessable(f"reference is already used by another {op.kind}", param="reference",
                        code="reference_already_used")


@contextlib.contextmanager
def _giving_back_limits(op: Operation, decision: dict):
    """Steps that may still refuse the operation after its velocity limits were reserved: a
    refusal rolls the operation back, so the reservation goes back too, and the 402 carries
    the ``decision`` (as ``Decision.to_dict`` gives it)."""
    try:
        yield
    except BaseException as exc:
        if op.limit_reservation:
            release_limits(op.limit_reservation)
        if isinstance(exc, PaymentDeclined) and "decision" not in exc.extra:
            exc.extra["decision"] = decision
        raise


def _start(session: Session, merchant: Merchant, kind: str, body: dict, key: str, *, amount: int, currency: str,
           routing_view: dict | None = None, decision=None, written: bool = True, **fields) -> tuple[Operation, dict]:
    """Decide, reserve limits and write the operation as pending; not yet committed. It moves to
    processing with its first channel (run_channels) or before it settles inside the ledger.
    ``written=False``: not written yet, left to ``_insert`` (run_channels inserts it as processing
    with its first channel). Returns the operation and the decision as a later refusal reports it."""
    facts = routing.facts(kind, merchant, body, amount=amount, currency=currency)
    if decision is None:  # a success_rate route's scores are read with the limit reservation, in one round trip
        decision = routing.decide(kind, merchant, body, amount=amount, currency=currency, split_key=key,
                                  defer_scores=True)
    if routing_view is None:
        routing.refuse_if_declined(decision)
    decision, reservation = _reserve(decision, facts, amount, currency, merchant.livemode)
    payload = decision.to_dict()
    op = Operation(
        id=new_id(OperationKind(kind).id_prefix), merchant_id=merchant.id, livemode=merchant.livemode, kind=kind,
        status=PENDING, version=0, amount=amount, currency=currency, fee=fields.pop("fee", payload["fee"]),
        reference=body["reference"], idempotency_key=key, metadata_=body.get("metadata") or {},
        limit_reservation=reservation,
        routing=routing_view or {k: payload[k] for k in ("ruleset_version", "merchant_ruleset_version", "matched_rules",
                                                          "candidates", "dropped", "channel", *STRATEGY_KEYS)
                                  if k in payload},
        request_id=context.current_request_id(), **fields)
    context.set_object_id(op.id)
    if written:
        _insert(session, op, payload)
    return op, payload


def _insert(session: Session, op: Operation, decision: dict) -> None:
    """Write the new operation; a refusal (its reference or key already used) gives its limits back."""
    with _giving_back_limits(op, decision):
        _write(session, op)


def create_payment(session: Session, merchant: Merchant, body: dict, key: str) -> Made:
    guard("payment")
    if (made := _resume(session, merchant, key, "payment")) is not None:
        return made
    account = payment_terms(session, merchant, body)
    method, token = without_token(body["payment_method"])
    if account is not None:
        decision = routing.decide("payment", merchant, body, amount=body["amount"], currency=body["currency"],
                                  split_key=key, availability=routing.LedgerOnly())
        routing.refuse_if_declined(decision)  # a balance payment needs no channel, but obeys the rules
        view = ledger_only_view(decision)
    else:
        decision = view = None
    order_terms(session, merchant, body, hold=True)  # held before anything is written: rolled back with it
    op, decided = _start(session, merchant, "payment", body, key, amount=body["amount"], currency=body["currency"],
                         decision=decision, routing_view=view, customer=body.get("customer"), payment_method=method,
                         description=body.get("description"), account_id=account.id if account else None,
                         order_id=body.get("order"), written=account is not None,
                         capture_method="manual" if body.get("capture_method") == "manual" else None)
    if account is not None:
        with _giving_back_limits(op, decided):
            transition(session, op, PROCESSING)
            settle(session, op, SUCCEEDED, attempts=[])  # inside the ledger; 402 if the balance is short
        return Made(op, [])  # committed with the stored response
    return run_channels(session, op, attempts=[], token=token, retry=decided.get("retry"),
                        write=lambda: _insert(session, op, decided))


def payment_terms(session: Session, merchant: Merchant, body: dict):
    """What ``create_payment`` checks of its body before it decides, simulate too: a balance payment takes no
    token and no manual capture (400) and names an account of the merchant in its currency (404
    ``payment_method[account]``, 422 ``currency_mismatch``). Answers the balance payment's account, else
    None. Its order is checked after the decision (``order_terms``): a declined balance payment is 402."""
    method, account = body["payment_method"], None
    if method["type"] == "balance":
        if "token" in method:
            raise InvalidRequest("a balance payment moves money inside the ledger: it takes no token",
                                 param="payment_method[token]")
        if body.get("capture_method") == "manual":
            raise InvalidRequest("a balance payment moves money inside the ledger at once: it cannot be "
                                 "authorized and captured later", param="capture_method")
        account = get_account(session, merchant, method["account"], param="payment_method[account]")
        if account.currency != body["currency"]:
            raise Unprocessable(f"account {account.id} holds {account.currency}", param="currency",
                                code="currency_mismatch")
    return account


def order_terms(session: Session, merchant: Merchant, body: dict, *, hold: bool) -> None:
    """A payment's named order (404 ``order``, 422 ``currency_mismatch``, 409 ``order_amount_exceeded``),
    held for the payment (``hold``: rolled back with it if it is refused) or only checked (simulate)."""
    if body.get("order"):
        (orders.reserve if hold else orders.payable)(session, merchant, body["order"], body["amount"],
                                                     body["currency"])


def refuse_balance_topup(body: dict) -> None:
    """A top-up pays in through a channel, never from a balance (400), as created or simulated."""
    if body["payment_method"]["type"] == "balance":
        raise InvalidRequest("a top-up pays in from outside: payment_method cannot be balance",
                             param="payment_method[type]")


def create_topup(session: Session, merchant: Merchant, body: dict, key: str) -> Made:
    guard("topup")
    if (made := _resume(session, merchant, key, "topup")) is not None:
        return made
    refuse_balance_topup(body)
    account = account_in(session, merchant, body)
    method, token = without_token(body["payment_method"])
    op, decided = _start(session, merchant, "topup", body, key, amount=body["amount"], currency=body["currency"],
                         payment_method=method, account_id=account.id, customer=account.customer, written=False)
    return run_channels(session, op, attempts=[], token=token, retry=decided.get("retry"),
                        write=lambda: _insert(session, op, decided))


def create_withdrawal(session: Session, merchant: Merchant, body: dict, key: str) -> Made:
    guard("withdrawal")
    if (made := _resume(session, merchant, key, "withdrawal")) is not None:
        return made
    account = account_in(session, merchant, body)
    facts_body = {**body, "customer": account.customer}
    op, decided = _start(session, merchant, "withdrawal", facts_body, key, amount=body["amount"],
                         currency=body["currency"], destination=body["destination"], account_id=account.id,
                         customer=account.customer)
    # The hold: available → pending on the same account, refused (402, nothing written) if short.
    with _giving_back_limits(op, decided):
        hold = postings.withdrawal_hold(op.amount)
        ledger.post(session, merchant_id=merchant.id, kind=hold.kind, source_id=op.id,
                    legs=ledger.legs_of(hold, lambda _customer: account))
    return run_channels(session, op, attempts=[], retry=decided.get("retry"))


def create_refund(session: Session, merchant: Merchant, body: dict, key: str) -> Made:
    guard("refund")
    if (made := _resume(session, merchant, key, "refund")) is not None:
        return made
    # Locked until this transaction ends: a dispute's insert takes the same row (app.services.disputes),
    # so the refund's "is it disputed?" and the dispute's "what is left after refunds?" are decided one
    # after the other, never both on what the payment had before the other (SQLite: one writer anyway).
    payment, amount = refund_terms(session, merchant, body, lock=True)
    decision, view = refund_decision(merchant, body, payment, amount, key)
    # Reserve the amount on the payment: parallel refunds can never exceed what was paid.
    reserved = session.execute(
        update(Operation).where(Operation.id == payment.id, Operation.amount_refunded + amount
                                <= func.coalesce(Operation.amount_captured, Operation.amount))
        .values(amount_refunded=Operation.amount_refunded + amount).execution_options(synchronize_session=False))
    if reserved.rowcount != 1:
        raise _beyond_what_was_paid(payment)
    op, decided = _start(session, merchant, "refund", {**body, "customer": payment.customer}, key, amount=amount,
                         currency=payment.currency, decision=decision, routing_view=view,
                         fee=REFUND_FEE, payment_id=payment.id, reason=body.get("reason"), customer=payment.customer,
                         account_id=None, order_id=payment.order_id)
    op.channel = payment.channel
    if not payment.channel:  # a balance payment is refunded inside the ledger
        with _giving_back_limits(op, decided):
            transition(session, op, PROCESSING)
            settle(session, op, SUCCEEDED, attempts=[])
        return Made(op, [])  # committed with the stored response
    return run_channels(session, op, attempts=[])


REFUND_FEE = 0  # a refund is charged nothing, whatever fee the rules name


def refund_terms(session: Session, merchant: Merchant, body: dict, *, lock: bool = False) -> tuple[Operation, int]:
    """The payment a refund's body names and the amount it refunds (by default what is left of it), as
    ``create_refund`` reads them (``lock``: its row locked until the transaction ends); simulate reads them
    too. 404 ``payment``; 422 ``payment_not_refundable`` unless it succeeded, ``refund_exceeds_payment``
    when nothing is left; 409 ``payment_disputed``. An amount beyond what is left is refused after the
    decision (``refund_fits``), as create_refund's reservation refuses it."""
    payment = get_operation(session, merchant, "payment", body["payment"], param="payment", lock=lock)
    if payment.status != SUCCEEDED:
        raise Unprocessable(f"payment {payment.id} is {payment.status}; only a succeeded payment is refundable",
                            param="payment", code="payment_not_refundable")
    disputes.refuse_refund(session, payment)
    amount = body.get("amount", orders.paid_amount(payment) - payment.amount_refunded)  # a partial capture too
    if amount <= 0:
        raise Unprocessable("this payment is already fully refunded", param="amount",
                            code="refund_exceeds_payment")
    return payment, amount


def refund_fits(payment: Operation, amount: int) -> None:
    """422 ``refund_exceeds_payment`` when ``amount`` is more than is left of ``payment``: what
    ``create_refund``'s reservation refuses, after the decision (a declined refund is 402 first)."""
    if payment.amount_refunded + amount > orders.paid_amount(payment):
        raise _beyond_what_was_paid(payment)


def _beyond_what_was_paid(payment: Operation) -> Unprocessable:
    return Unprocessable(f"refunds of {payment.id} would exceed the amount paid", param="amount",
                         code="refund_exceeds_payment")


def refund_decision(merchant: Merchant, body: dict, payment: Operation, amount: int, key: str) -> tuple:
    """The rules' decision on refunding ``amount`` of ``payment`` (on its currency, customer and payment
    method) and the routing the refund shows: its payment's channel, or none inside the ledger. 402 when the
    rules decline it or that channel cannot refund now (the exception's ``decision`` says so)."""
    decision = routing.decide("refund", merchant, {**body, "customer": payment.customer,
                                                   "payment_method": payment.payment_method},
                              amount=amount, currency=payment.currency, split_key=key,
                              availability=routing.LedgerOnly())
    routing.refuse_if_declined(decision)  # refunds follow their payment's channel, but obey the rules
    view = {**ledger_only_view(decision), "candidates": [payment.channel] if payment.channel else [],
            "channel": payment.channel}
    if payment.channel:
        reason = routing.Availability(payment.livemode).drop_reason(
            payment.channel, operation="refund", currency=payment.currency,
            method=(payment.payment_method or {}).get("type"))
        if reason:
            raise NoRoute(f"the payment's channel {payment.channel} cannot refund now ({reason})",
                          decision={**decision.to_dict(), "outcome": "decline", "decline_code": "no_route",
                                    "dropped": [{"channel": payment.channel, "reason": reason}]})
    return decision, view


def as_shown(decision, view: dict) -> dict:
    """A decision with the channel, candidates and dropped channels the operation shows in its ``routing``
    (``view``), as simulate answers it for an operation that reaches no channel by routing."""
    return {**decision.to_dict(), **{name: view[name] for name in ("candidates", "dropped", "channel")}}


def ledger_only_view(decision) -> dict:
    payload = decision.to_dict()
    view = {"ruleset_version": payload["ruleset_version"], "matched_rules": payload["matched_rules"],
            "candidates": [], "dropped": [], "channel": None}
    if "merchant_ruleset_version" in payload:
        view["merchant_ruleset_version"] = payload["merchant_ruleset_version"]
    return view


def account_in(session: Session, merchant: Merchant, body: dict):
    """The merchant's account ``body["account"]`` of a top-up or withdrawal (404 ``account``; 422
    ``currency_mismatch`` when it holds another currency than ``body["currency"]``); simulate reads it too."""
    account = get_account(session, merchant, body["account"], param="account")
    if account.currency != body["currency"]:
        raise Unprocessable(f"account {account.id} holds {account.currency}", param="currency",
                            code="currency_mismatch")
    return account


def get_operation(session: Session, merchant: Merchant, kind: str, op_id: str, param: str = "id",
                  lock: bool = False) -> Operation:
    """The merchant's operation ``op_id`` of ``kind`` (404 otherwise); with ``lock``, its row read anew
    and locked until the transaction ends (``FOR NO KEY UPDATE``: the lock an UPDATE of it takes, so
    rows that refer to it can still be inserted meanwhile)."""
    if lock:
        op = session.get(Operation, op_id, with_for_update={"key_share": True}, populate_existing=True)
    else:
        op = session.get(Operation, op_id)
    if op is None or op.merchant_id != merchant.id or op.livemode != merchant.livemode or op.kind != kind:
        raise NotFound(f"No such {kind}: '{op_id}'", param=param)
    return op


# A payment's statuses beyond the shared machine (contract §1): requires_action, requires_capture, canceled.
PAYMENT_ONLY_STATUSES = frozenset({"requires_action", "requires_capture", "canceled"})


def list_filters(kind: str) -> tuple[str, ...]:
    """The filters a list of operations of ``kind`` takes: the fields its objects have."""
    return ("status", "customer", "reference", "channel", *_NAMES_OBJECTS.get(kind, ()))


# The objects an operation of a kind names: a payment its order, a refund its payment and that payment's order.
_NAMES_OBJECTS = {OperationKind.PAYMENT: ("order",), OperationKind.REFUND: ("order", "payment")}


def list_statuses(kind: str) -> frozenset[str]:
    """The statuses an operation of ``kind`` can show (contract §1: payments add three)."""
    base = frozenset(OPERATION_TRANSITIONS)
    return base | PAYMENT_ONLY_STATUSES if kind == OperationKind.PAYMENT else base


def list_operations(session: Session, merchant: Merchant, kind: str, query: ListQuery) -> Page:
    return page(session, Operation, merchant_id=merchant.id, query=query,
                columns={"payment": Operation.payment_id, "order": Operation.order_id},
                where=(Operation.livemode == merchant.livemode, Operation.kind == kind))
