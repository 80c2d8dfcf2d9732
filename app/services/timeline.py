"""An operation's whole story for operators (the console's operation page): the routing decision
and why, the attempts, the callbacks received, the status queries, the ledger lines, the events
and their webhook deliveries, reconciliation issues, a payment's disputes (with their ledger lines
and events), as one list in time order.

"Why did this payment go to acq_beta and cost 0.62 USD?": the decision stored on the operation names
the rule-set version, the rules matched, the candidates and the channels dropped with their
reasons; the version's source then tells which rule chose the route (and its split weights) and
which set the fee, and the fee's formula. Every read is by an indexed key of the operation.
"""
from __future__ import annotations

import functools
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters.db import read_only
from app.adapters.models import (
    Attempt,
    ChannelCallback,
    Dispute,
    Event,
    JournalEntry,
    LedgerLine,
    Operation,
    ReconciliationIssue,
    RulesetVersion,
    Transfer,
)
from app.adapters.webhook_models import WebhookAttempt, WebhookDelivery
from app.domain.errors import NotFound
from app.domain.money import format_money
from app.services import disputes
from app.services.representation import operation as operation_view
from app.services.representation import rfc3339
from app.services.representation import transfer as transfer_view


def timeline(object_id: str) -> dict:
    """The operation (or transfer) ``object_id`` and everything recorded about it; a dispute's id
    answers its payment's story (the dispute is part of it)."""
    with read_only() as session:
        op = session.get(Operation, object_id)
        if op is None and object_id.startswith("dp_") and (dispute := session.get(Dispute, object_id)):
            op = session.get(Operation, dispute.payment_id)
        if op is None:
            transfer = session.get(Transfer, object_id)
            if transfer is None:
                raise NotFound(f"No such operation or transfer: '{object_id}'", param="id")
            return _transfer_story(session, transfer)
        attempts = list(session.scalars(select(Attempt).where(Attempt.operation_id == op.id).order_by(Attempt.seq)))
        story = {"object": operation_view(op, attempts), "merchant": op.merchant_id, "channel": op.channel,
                 "channel_reference": op.channel_reference, "decision": decision(session, op),
                 "attempts": [_attempt(a) for a in attempts], "callbacks": _callbacks(session, op),
                 "status_queries": _status_queries(op), "ledger": _ledger(session, op.id),
                 "refunds": _refunds(session, op), "issues": _issues(session, op.id)}
        story["events"], story["deliveries"] = _events_and_deliveries(session, op.id)
        story["disputes"] = _disputes(session, op)
        for dispute in story["disputes"]:
            story["ledger"] += dispute.pop("_ledger")
            story["events"] += dispute.pop("_events")
            story["deliveries"] += dispute.pop("_deliveries")
        story["entries"] = _entries(op, story)
        return story


def _disputes(session: Session, op: Operation) -> list[dict]:
    """A payment's disputes; their ledger lines, events and webhook deliveries join the payment's."""
    if op.kind != "payment":
        return []
    found = []
    for dispute in disputes.of_payment(session, op):
        story_events, story_deliveries = _events_and_deliveries(session, dispute.id)
        found.append({**disputes.representation(dispute), "channel_reference": dispute.channel_reference,
                      "_at": dispute.created_at, "_closed_at": dispute.closed_at,
                      "_ledger": _ledger(session, dispute.id), "_events": story_events,
                      "_deliveries": story_deliveries})
    return found


def decision(session: Session, op: Operation) -> dict:
    """The routing decision as stored, with the rules behind the route and the fee."""
    routing = dict(op.routing or {})
    out = {"ruleset_version": routing.get("ruleset_version"), "matched_rules": list(routing.get("matched_rules") or []),
           "candidates": list(routing.get("candidates") or []), "dropped": list(routing.get("dropped") or []),
           "chosen": routing.get("channel"), "channel": op.channel, "fee": op.fee, "amount": op.amount,
           "currency": op.currency, "limits": op.limit_reservation, "route_rule": None, "route": None,
           "fee_rule": None, "fee_spec": None, "fee_formula": None}
    version = out["ruleset_version"]
    ruleset = _ruleset(session, version) if version is not None else None
    if ruleset is None:
        return out
    from rules.decide import MerchantRules, sources
    from rules.fees import fee_to_dict, formula

    by_id = ruleset.by_id()
    own_version = routing.get("merchant_ruleset_version")
    own_set = _ruleset(session, own_version) if own_version is not None else None
    own = MerchantRules(op.merchant_id, own_set, None, own_version) if own_set is not None else None
    prefix = own.prefix if own is not None else None
    matched = tuple(rule for rule in out["matched_rules"]
                    if rule in by_id or (prefix and rule.startswith(prefix) and rule[len(prefix):] in own_set.by_id()))
    why = sources(ruleset, matched, own)
    out["route_rule"], out["fee_rule"] = why["routing"], why["fee"]
    if own is not None and why["routing"].startswith(prefix):
        name = why["routing"][len(prefix):]
        then = own_set.by_id()[name].then if name in own_set.by_id() else own_set.defaults
    else:
        then = by_id[why["routing"]].then if why["routing"] in by_id else ruleset.defaults
    if then.split:
        out["route"] = {"split": [{"channel": c, "weight": w} for c, w in then.split]}
    elif then.route:
        out["route"] = {"order": list(then.route)}
    if why["fee_spec"] is not None:
        out["fee_spec"] = fee_to_dict(why["fee_spec"])
    out["fee_formula"] = formula(why["fee_spec"], op.amount, op.currency, money=format_money)  # for people
    return out


@functools.lru_cache(maxsize=32)
def _parsed(version: int, source: str):
    from rules import format

    ruleset, _problems = format.check(source)
    return ruleset


def _ruleset(session: Session, version: int):
    """A published version's rule set (versions never change: parsed once per process)."""
    source = session.scalar(select(RulesetVersion.source).where(RulesetVersion.version == version))
    return _parsed(version, source) if source is not None else None


def _attempt(a: Attempt) -> dict:
    return {"seq": a.seq, "id": a.id, "channel": a.channel, "status": a.status, "error_code": a.error_code,
            "error_message": a.error_message, "channel_reference": a.channel_reference, "raw": a.raw,
            "channel_account": a.channel_account_id,  # the merchant's own credentials made it (None: the platform's)
            "created_at": rfc3339(a.created_at), "updated_at": rfc3339(a.updated_at), "_at": a.created_at}


def _callbacks(session: Session, op: Operation) -> list[dict]:
    # The channel echoes our reference, the operation's id (ix_channel_callbacks_reference).
    rows = session.scalars(select(ChannelCallback).where(ChannelCallback.reference == op.id)
                           .order_by(ChannelCallback.received_at))
    return [{"id": c.id, "channel": c.channel, "status": c.status, "error_code": c.error_code,
             "channel_reference": c.channel_reference, "outcome": c.outcome, "body": c.body,
             "received_at": rfc3339(c.received_at), "processed_at": rfc3339(c.processed_at), "_at": c.received_at}
            for c in rows]


def _status_queries(op: Operation) -> dict:
    """What is recorded of the status queries: how many were asked, the next one, the review flag
    (the channel answered "unknown operation" about an operation it had acknowledged)."""
    return {"asked": op.query_count, "next_at": rfc3339(op.next_query_at), "review": bool(op.review)}


def _ledger(session: Session, source_id: str) -> list[dict]:
    rows = session.execute(select(LedgerLine, JournalEntry.kind)
                           .join(JournalEntry, JournalEntry.id == LedgerLine.entry_id)
                           .where(JournalEntry.source_id == source_id)
                           .order_by(LedgerLine.created_at, LedgerLine.entry_id, LedgerLine.id))
    return [{"entry": line.entry_id, "kind": kind, "account": line.account_id, "balance_type": line.balance_type,
             "amount": line.amount, "currency": line.currency, "created_at": rfc3339(line.created_at),
             "_at": line.created_at} for line, kind in rows]


def _refunds(session: Session, op: Operation) -> list[dict]:
    if op.kind != "payment":
        return []
    rows = session.scalars(select(Operation).where(Operation.payment_id == op.id).order_by(Operation.created_at))
    return [{"id": r.id, "status": r.status, "amount": r.amount, "created_at": rfc3339(r.created_at),
             "_at": r.created_at} for r in rows]


def _issues(session: Session, operation_id: str) -> list[dict]:
    from app.services.issues import view

    rows = session.scalars(select(ReconciliationIssue).where(ReconciliationIssue.operation_id == operation_id)
                           .order_by(ReconciliationIssue.created_at))
    return [{**view(issue), "_at": issue.created_at} for issue in rows]


def _events_and_deliveries(session: Session, object_id: str) -> tuple[list[dict], list[dict]]:
    events = list(session.scalars(select(Event).where(Event.object_id == object_id).order_by(Event.created_at)))
    deliveries = list(session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.event_id.in_([e.id for e in events])).order_by(WebhookDelivery.created_at))) if events else []
    attempts = defaultdict(list)
    if deliveries:
        for attempt in session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id.in_([d.id for d in deliveries])).order_by(WebhookAttempt.number)):
            attempts[attempt.delivery_id].append({"number": attempt.number, "started_at": rfc3339(attempt.started_at),
                                                  "status_code": attempt.status_code, "latency_ms": attempt.latency_ms,
                                                  "error": attempt.error})
    types = {e.id: e.type for e in events}
    return ([{"id": e.id, "type": e.type, "relayed": e.relayed, "created_at": rfc3339(e.created_at),
              "_at": e.created_at} for e in events],
            [{"id": d.id, "event": d.event_id, "event_type": types[d.event_id], "endpoint": d.endpoint_id,
              "generation": d.generation, "status": d.status, "attempt_count": d.attempts,
              "last_status_code": d.last_status_code, "last_error": d.last_error,
              "created_at": rfc3339(d.created_at), "completed_at": rfc3339(d.completed_at),
              "attempts": attempts[d.id], "_at": d.created_at} for d in deliveries])


def _entries(op: Operation, story: dict) -> list[dict]:
    """Everything above as one list in time order: (when, what, summary, details)."""
    d = story["decision"]
    why = f"rules {', '.join(d['matched_rules']) or '(none)'} matched; candidates {', '.join(d['candidates']) or '-'}"
    if d["dropped"]:
        why += "; dropped " + ", ".join(f"{x['channel']} ({x['reason']})" for x in d["dropped"])
    entries = [(op.created_at, "decision", f"{op.kind} created, routed to {d['chosen'] or 'the ledger'}: {why}", d)]
    entries += [(a["_at"], "attempt", f"attempt {a['seq']} at {a['channel']}"
                 + (f" (merchant account {a['channel_account']})" if a["channel_account"] else "") + f": {a['status']}"
                 + (f" ({a['error_code']})" if a["error_code"] else ""), a) for a in story["attempts"]]
    entries += [(c["_at"], "callback", f"callback from {c['channel']}: {c['status']} → {c['outcome'] or 'pending'}", c)
                for c in story["callbacks"]]
    entries += [(line["_at"], "ledger", f"{_line(line)} ({line['balance_type']})", line) for line in story["ledger"]]
    entries += [(e["_at"], "event", f"event {e['type']}", e) for e in story["events"]]
    entries += [(w["_at"], "webhook", f"webhook {w['event_type']} to {w['endpoint']}: {w['status']}"
                 f" after {w['attempt_count']} attempt(s)", w) for w in story["deliveries"]]
    entries += [(r["_at"], "refund", f"refund {r['id']}: {format_money(r['amount'], op.currency)} {r['status']}", r)
                for r in story["refunds"]]
    entries += [(i["_at"], "issue", f"reconciliation issue {i['issue']}: {i['status']}", i) for i in story["issues"]]
    for x in story["disputes"]:
        entries.append((x["_at"], "dispute", f"dispute {x['id']} of {format_money(x['amount'], x['currency'])} "
                        f"({x['reason']}) reported by the channel", x))
        if x["_closed_at"] is not None:
            entries.append((x["_closed_at"], "dispute", f"dispute {x['id']} closed: {x['status']}", x))
    q = story["status_queries"]
    if q["asked"] or q["next_at"]:
        entries.append((op.updated_at, "status_query", f"{q['asked']} status quer{'y' if q['asked'] == 1 else 'ies'}"
                        + (f", next at {q['next_at']}" if q["next_at"] else "") + ("; under review" if q["review"]
                                                                                     else ""), q))
    entries.sort(key=lambda entry: entry[0])
    for section in ("attempts", "callbacks", "ledger", "events", "deliveries", "refunds", "issues", "disputes"):
        for item in story[section]:
            item.pop("_at", None)
            item.pop("_closed_at", None)
    return [{"at": rfc3339(at), "type": kind, "summary": text, "details": details}
            for at, kind, text, details in entries]


def _line(line: dict) -> str:
    """A ledger line in words, its amount in major units: ``payment: +20.52 USD on acct_…``."""
    return f"{line['kind']}: {format_money(line['amount'], line['currency'], signed=True)} on {line['account']}"


def _transfer_story(session: Session, transfer: Transfer) -> dict:
    story = {"object": transfer_view(transfer), "merchant": transfer.merchant_id,
             "ledger": _ledger(session, transfer.id)}
    story["events"], story["deliveries"] = _events_and_deliveries(session, transfer.id)
    entries = [(transfer.created_at, "transfer", f"transfer of {format_money(transfer.amount, transfer.currency)}",
                story["object"])]
    entries += [(line.pop("_at"), "ledger", _line(line), line) for line in story["ledger"]]
    entries += [(e.pop("_at"), "event", f"event {e['type']}", e) for e in story["events"]]
    entries += [(w.pop("_at"), "webhook", f"webhook {w['event_type']} to {w['endpoint']}: {w['status']}", w)
                for w in story["deliveries"]]
    entries.sort(key=lambda entry: entry[0])
    story["entries"] = [{"at": rfc3339(at), "type": kind, "summary": text, "details": details}
                        for at, kind, text, details in entries]
    return story
