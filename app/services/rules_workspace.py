"""The rules workspace (contract §3 and §5 "Rules"): a draft rule set looked at beside the live one.

Show the live (or any) version as YAML, validate a draft with its problems at their line, diff it
against live rule by rule, simulate one body under draft and live side by side (``sides``: the sets
each side decides with, which replay shares). Replay is ``app.services.rules_replay``; publishing,
approval, history and rollback are in ``app.services.rules_publishing``. Every decision here is made
by ``rules.decide.decide``, the one decision path the API uses; only the rule set and its matcher
differ.

``merchant``: whose set the draft is: the platform's (None) or one merchant's own set (contract §3),
decided beside the platform's live set. Validation refuses in a merchant's set a ``fee`` and any
channel that merchant cannot use.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace

import yaml

from app.adapters.db import read_only
from app.adapters.models import Merchant
from app.domain.errors import InvalidRequest, NotFound, PayRouterError
from app.domain.kinds import OperationKind
from app.services import routing
from app.services import rules_runtime as runtime
from app.services import rules_store as store
from rules import decide as decide_mod
from rules import diff as diff_mod
from rules import fees, format
from rules.engine import CompiledRules
from rules.model import RuleSet

_checked: OrderedDict[str, RuleSet] = OrderedDict()  # checksum → a draft that passed every check
_checked_lock = threading.Lock()


def owner(merchant: str | None) -> str | None:
    """Whose rule set: None (the platform's) or a well-formed merchant id (blank is the platform)."""
    return store.merchant_id(merchant or None)


NO_OWN_SET = """# {merchant} has no rule set of its own: the platform's decides alone.
# A merchant's set may decline, set limits, route, split and retry; fees come from the platform's.
rules: []
"""


# -- show ---------------------------------------------------------------------------------------

def as_yaml(source: str) -> str:
    """A stored source as YAML: YAML as written (comments kept), JSON converted."""
    try:
        data = json.loads(source)
    except ValueError:
        return source
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def show(version: int | None = None, merchant: str | None = None) -> dict:
    """``{version, live_version, source}``: the live version (or ``version``) as YAML."""
    merchant = owner(merchant)
    with read_only() as session:
        if merchant is not None and session.get(Merchant, merchant) is None:
            raise NotFound(f"No such merchant: '{merchant}'", param="merchant")
        live = store.live_version(session, merchant)
        wanted = live if version is None else version
        if wanted is None:
            source = NO_OWN_SET.format(merchant=merchant) if merchant else \
                store.DEFAULT_RULES.read_text(encoding="utf-8")
            return {"version": None, "live_version": None, "merchant": merchant, "source": source}
        source = store.source_of(session, wanted, merchant)
    return {"version": wanted, "live_version": live, "merchant": merchant, "source": as_yaml(source)}


def merchants_with_sets() -> list[str]:
    """Merchants with a rule set of their own (the console's choices for "Rule set")."""
    with read_only() as session:
        return store.owners(session)


# -- validate -----------------------------------------------------------------------------------

def problem_dict(problem) -> dict:
    return {"line": problem.line, "rule_id": problem.rule_id, "path": problem.path, "message": problem.message,
            "text": str(problem)}


def checked(source: str, merchant: str | None = None) -> RuleSet:
    """The draft as a rule set once it passed every check (schema, static, engine limits, a compile in
    a child process; for a merchant's set, no fee and only channels it can use); ``RulesInvalid`` or
    ``InvalidRequest`` otherwise. Recent passes are remembered."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequest("the draft is empty", param="source")
    merchant = owner(merchant)
    key = hashlib.sha256(f"{merchant or ''}\x00{source}".encode()).hexdigest()
    with _checked_lock:
        if key in _checked:
            _checked.move_to_end(key)
            return _checked[key]
    ruleset = store.check(source, merchant)
    with _checked_lock:
        _checked[key] = ruleset
        while len(_checked) > 16:
            _checked.popitem(last=False)
    return ruleset


def validate(source: str, merchant: str | None = None) -> list[dict]:
    """Every problem of a draft (``[]``: it can be published), each with its line where known."""
    try:
        checked(source, merchant)
    except format.RulesInvalid as exc:
        return [problem_dict(p) for p in exc.problems]
    except PayRouterError as exc:
        return [{"line": None, "rule_id": None, "path": "", "message": exc.message, "text": exc.message}]
    return []


# -- diff ---------------------------------------------------------------------------------------

def _live_data(merchant: str | None = None, version: int | None = None):
    merchant = owner(merchant)
    with read_only() as session:
        wanted = store.live_version(session, merchant) if version is None else version
        if wanted is None:
            return None, None
        return wanted, format.to_data(store.source_of(session, wanted, merchant))


def diff(source: str, merchant: str | None = None, against: int | None = None) -> dict:
    """The draft against the live version (or ``against``), rule by rule; ``problems`` if it cannot be read."""
    version, before = _live_data(merchant, against)
    problems = validate(source, merchant)
    after = format.to_data(source) if isinstance(source, str) and source.strip() else None
    if not isinstance(after, dict):  # unreadable: nothing to compare, the problems say why
        after = before
    result = diff_mod.diff(before, after)
    result.update({"against": version, "problems": problems, "text": diff_mod.render(result)})
    return result


def dropped_rules(source: str, merchant: str | None = None) -> list[str]:
    """Ids of live rules the draft no longer has."""
    _, before = _live_data(merchant)
    return [item["id"] for item in diff_mod.diff(before, format.to_data(source))["removed"]]


# -- simulate -----------------------------------------------------------------------------------

def _merchant(session, merchant_id: str | None, livemode: bool):
    if not merchant_id:
        return SimpleNamespace(id=None, category=None, livemode=livemode)
    row = session.get(Merchant, merchant_id)
    if row is None:
        raise NotFound(f"No such merchant: '{merchant_id}'", param="merchant")
    return SimpleNamespace(id=row.id, category=row.category, livemode=livemode)


@dataclass(frozen=True)
class Side:
    """The sets one decision is made under: the platform's and, for a merchant with one, its own."""

    ruleset: RuleSet
    matcher: object
    version: int | None
    merchant: decide_mod.MerchantRules | None = None

    def decide(self, facts: dict, availability, key: str):
        return decide_mod.decide(facts, self.ruleset, self.matcher, availability, split_key=key,
                                 version=self.version, merchant=self.merchant)


def sides(draft: RuleSet, draft_matcher, draft_owner: str | None, merchant_id: str | None) -> tuple[Side, Side]:
    """(live, draft) for an operation of ``merchant_id``: live is the platform's live set with the
    merchant's own live set; the draft takes the place of the platform's set, or of ``draft_owner``'s."""
    live = runtime.current()
    own = runtime.merchant_rules(merchant_id)
    before = Side(live.ruleset, live, live.version, own)
    if draft_owner is None:
        return before, Side(draft, draft_matcher, None, own)
    return before, Side(live.ruleset, live, live.version,
                        decide_mod.MerchantRules(draft_owner, draft, draft_matcher, None))


def explained(decision, side: Side, amount: int, currency: str, money=None) -> dict:
    """The decision (contract's routing_decision) plus why: the rule that routed, the rule that set the
    fee with its spec and formula (its amounts written by ``money``: rules.fees.formula), the rule that declined."""
    out = decision.to_dict()
    src = decide_mod.sources(side.ruleset, decision.matched_rules, side.merchant)
    spec = src.pop("fee_spec")
    out["explain"] = {
        "routing_from": src["routing"] if decision.outcome == "route" else None,
        "fee_from": src["fee"] if decision.outcome == "route" else None,
        "fee_spec": fees.fee_to_dict(spec) if spec is not None and decision.outcome == "route" else None,
        "fee_formula": fees.formula(spec, amount, currency, money) if decision.outcome == "route" else None,
        "declined_by": decision.declined_by,
    }
    return out


def simulate(source: str, kind: str, body: dict, merchant_id: str | None = None, livemode: bool = False,
             draft_owner: str | None = None, money=None) -> dict:
    """One body decided under the draft and under the live sets, side by side (no side effect), as an
    operation of ``merchant_id`` (default: the draft's owner, the only merchant a merchant's draft
    decides for). ``money`` writes the fee formula's amounts (the console's: in major units)."""
    from app.services.validation import validate as validate_body

    if kind not in OperationKind.routed():
        raise InvalidRequest(f"kind must be one of {', '.join(OperationKind.routed())}", param="kind")
    draft_owner = owner(draft_owner)
    merchant_id = owner(merchant_id) or draft_owner
    if draft_owner is not None and merchant_id != draft_owner:
        raise InvalidRequest(f"a draft of {draft_owner}'s rule set decides only {draft_owner}'s operations",
                             param="merchant")
    ruleset = checked(source, draft_owner)
    body = validate_body("simulate", {**body, "type": kind})
    routing.require_instrument(kind, body)
    with read_only() as session:
        merchant = _merchant(session, merchant_id, livemode)
    amount, currency = body["amount"], body["currency"]
    facts = routing.facts(kind, merchant, body, amount=amount, currency=currency)
    availability = routing.availability_for(kind, body, livemode)
    key = body.get("reference") or "simulate"
    matcher = CompiledRules(ruleset)
    try:
        live, draft = sides(ruleset, matcher, draft_owner, merchant.id)
        before, after = live.decide(facts, availability, key), draft.decide(facts, availability, key)
        shown_draft, shown_live = (explained(after, draft, amount, currency, money),
                                   explained(before, live, amount, currency, money))
    finally:
        matcher.close()
    return {"kind": kind, "merchant": merchant.id, "facts": facts_view(facts), "draft": shown_draft,
            "live": shown_live, "differs": _outcome(after) != _outcome(before)}


def facts_view(facts: dict) -> dict:
    return json.loads(json.dumps(facts, default=str))


def _outcome(decision) -> tuple:
    return decision.outcome, decision.decline_code, decision.channel, decision.fee, decision.matched_rules
