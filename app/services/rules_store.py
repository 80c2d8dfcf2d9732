"""Rule-set versions in the database: validate, compile-check, publish, history, rollback.

Publishing is one transaction (a version row and a publication row); the newest
publication is the live version. After the commit the live version number is written
to Redis, where every process checks it cheaply (app/services/rules_runtime.py).

Each owner has its own versions and publications: the platform (``merchant=None``) and every merchant
with a set of its own (contract §3 "rule sets per merchant"). Version numbers are one sequence for
all owners, so a number names one version; a merchant's versions are only reachable as that merchant's.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

import rules
from app.adapters.db import read_only, unit_of_work
from app.adapters.models import Merchant, RulesetPublication, RulesetVersion
from app.domain.errors import InvalidRequest, NotFound
from rules import compiler, format
from rules.engine import EngineError, check_compiles_in_subprocess

LIVE_KEY = "payrouter:rules:live"
MERCHANT_LIVE_KEY = "payrouter:rules:merchants"  # hash: merchant id → live version (0: none)
MERCHANT_ID = re.compile(r"^mer_[A-Za-z0-9]{1,36}$")
DEFAULT_RULES = Path(rules.__file__).resolve().parent / "default_rules.yaml"
log = logging.getLogger("payrouter.rules")


def known_channels() -> set[str] | None:
    """The channels a rule may name: those stored in the database (read now, not this process's
    copy), which every process runs within 2 s. A rule naming any other is refused at publish: it
    would route nowhere until a channel of that name is imported."""
    from app.adapters import channel_definitions

    return {channel_id for channel_id, _ in channel_definitions.rows()}


def merchant_id(merchant: str | None) -> str | None:
    """``merchant`` as an owner of rule sets: None (the platform) or a well-formed merchant id."""
    if merchant is None:
        return None
    if not isinstance(merchant, str) or not MERCHANT_ID.match(merchant):
        raise InvalidRequest(f"merchant must be a merchant id (mer_…), not {str(merchant)[:60]!r}", param="merchant")
    return merchant


def unusable_channels(merchant: str) -> dict[str, str]:
    """The configured channels ``merchant`` cannot use, each with why (its own set may not name them);
    ``NotFound`` for a merchant that does not exist."""
    from app.adapters.channels_runtime import registry

    with read_only() as session:
        if session.get(Merchant, merchant_id(merchant)) is None:
            raise NotFound(f"No such merchant: '{merchant}'", param="merchant")
    return {ch.spec.id: "it is disabled in the channels file" for ch in registry() if not ch.spec.enabled}


def check(source: str, merchant: str | None = None):
    """Every problem of a rule file at once (schema, static checks, engine limits, and for a merchant's
    set what only the platform may say), then a compile in a child process so a rule set that would
    crash or hang the engine never reaches this one."""
    unusable = unusable_channels(merchant) if merchant is not None else None
    ruleset, problems = format.check(source, known_channels(), unusable)
    if ruleset is not None and not problems:
        problems = compiler.engine_problems(ruleset)
    if problems:
        raise format.RulesInvalid(problems)
    try:
        check_compiles_in_subprocess(compiler.plan(ruleset).to_json())
    except EngineError as exc:
        raise InvalidRequest(str(exc), code="rules_engine_refused") from None
    return ruleset


def publish(session: Session, source: str, author: str, comment: str | None = None,
            approved_by: str | None = None, merchant: str | None = None) -> int:
    """Store and make live a new version of the platform's set (or ``merchant``'s); returns its number.
    ``comment``: the reason, kept on the version and its publication; ``approved_by``: the second
    person when approval is required."""
    check(source, merchant)
    version = RulesetVersion(source=source, author=author, comment=comment, merchant_id=merchant,
                             checksum=hashlib.sha256(source.encode()).hexdigest())
    session.add(version)
    session.flush()
    session.add(RulesetPublication(version=version.version, action="publish", actor=author, reason=comment,
                                   approved_by=approved_by, merchant_id=merchant))
    session.flush()
    return version.version


def _owned(session: Session, version: int, merchant: str | None) -> RulesetVersion:
    """A version of this owner's; another owner's answers as unknown (404), like an id of another merchant."""
    row = session.get(RulesetVersion, version) if type(version) is int and 0 < version < 2**31 else None
    if row is None or row.merchant_id != merchant:
        owner = f" of merchant {merchant}" if merchant else ""
        raise NotFound(f"No such rule-set version{owner}: {version}", param="version")
    return row


def rollback(session: Session, version: int, actor: str, reason: str | None = None,
             merchant: str | None = None) -> str:
    """Make an earlier version of the same owner live again (recorded as a new publication), checked
    as publishing its text is (``check``): a version naming a channel no longer stored (removed since)
    is refused, never made live. Returns the version's source."""
    source = _owned(session, version, merchant).source
    check(source, merchant)
    session.add(RulesetPublication(version=version, action="rollback", actor=actor, reason=reason,
                                   merchant_id=merchant))
    session.flush()
    return source


def _of(column, merchant: str | None):
    return column.is_(None) if merchant is None else column == merchant


def live_version(session: Session, merchant: str | None = None) -> int | None:
    return session.scalar(select(RulesetPublication.version).where(_of(RulesetPublication.merchant_id, merchant))
                          .order_by(RulesetPublication.id.desc()).limit(1))


def source_of(session: Session, version: int, merchant: str | None = None) -> str:
    return _owned(session, version, merchant).source


def owners(session: Session, limit: int = 1000) -> list[str]:
    """The merchants that have published a set of their own (the console's merchant choices)."""
    column = RulesetPublication.merchant_id
    return list(session.scalars(select(column).where(column.is_not(None)).distinct().order_by(column).limit(limit)))


def history(session: Session, merchant: str | None = None) -> list[dict]:
    rows = session.execute(select(RulesetPublication, RulesetVersion)
                           .join(RulesetVersion, RulesetVersion.version == RulesetPublication.version)
                           .where(_of(RulesetPublication.merchant_id, merchant))
                           .order_by(RulesetPublication.id.desc())).all()
    return [{"version": p.version, "action": p.action, "actor": p.actor, "reason": p.reason,
             "at": p.created_at.isoformat() + "Z", "author": v.author, "comment": v.comment,
             "approved_by": p.approved_by, "merchant": merchant,
             "checksum": v.checksum[:12]} for p, v in rows]


def announce(version: int | None, notify_others: bool = True, merchant: str | None = None) -> None:
    """Tell every process the live version: the Redis key they poll while not listening, and a
    change notice to those listening (best effort: they also fall back to the database). A merchant's
    live version (0: it has none) is a field of one hash."""
    from app.adapters import notify
    from app.adapters.redis_conn import get_redis

    if version is None and merchant is None:
        return
    try:
        if merchant is None:
            get_redis().set(LIVE_KEY, version)
        else:
            get_redis().hset(MERCHANT_LIVE_KEY, merchant, version or 0)
        if notify_others:
            notify.announce("rules")
    except redis.RedisError:
        log.warning("could not announce rule-set version %s in Redis; processes will read the database", version)


def publish_and_announce(source: str, author: str, comment: str | None = None) -> int:
    with unit_of_work() as session:
        version = publish(session, source, author, comment)
    announce(version)
    return version


def seed_default_rules() -> dict:
    """``payrouter init``: publish the shipped default rules if nothing is published yet."""
    with unit_of_work() as session:
        live = live_version(session)
    if live is None:
        live = publish_and_announce(DEFAULT_RULES.read_text(), "payrouter init", "default rules")
    return {"rules_version": live}
