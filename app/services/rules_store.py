"""Rule-set versions in the database: validate, compile-check, publish, history, rollback.

Publishing is one transaction (a version row and a publication row); the newest
publication is the live version. After the commit the live version number is written
to Redis, where every process checks it cheaply (app/services/rules_runtime.py).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

import rules
from app.adapters.db import unit_of_work
from app.adapters.models import RulesetPublication, RulesetVersion
from app.domain.errors import InvalidRequest, NotFound
from rules import compiler, format
from rules.engine import EngineError, check_compiles_in_subprocess

LIVE_KEY = "payrouter:rules:live"
DEFAULT_RULES = Path(rules.__file__).resolve().parent / "default_rules.yaml"
log = logging.getLogger("payrouter.rules")


def known_channels() -> set[str] | None:
    from app.adapters.channels_runtime import registry

    return set(registry().ids())


def check(source: str):
    """Every problem of a rule file at once (schema, static checks, engine limits), then a compile
    in a child process so a rule set that would crash or hang the engine never reaches this one."""
    ruleset, problems = format.check(source, known_channels())
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
            approved_by: str | None = None) -> int:
    """Store and make live a new version; returns its number. ``comment``: the reason, kept on the
    version and its publication; ``approved_by``: the second person when approval is required."""
    check(source)
    version = RulesetVersion(source=source, author=author, comment=comment,
                             checksum=hashlib.sha256(source.encode()).hexdigest())
    session.add(version)
    session.flush()
    session.add(RulesetPublication(version=version.version, action="publish", actor=author, reason=comment,
                                   approved_by=approved_by))
    session.flush()
    return version.version


def rollback(session: Session, version: int, actor: str, reason: str | None = None) -> int:
    """Make an earlier version live again (recorded as a new publication)."""
    if session.get(RulesetVersion, version) is None:
        raise NotFound(f"No such rule-set version: {version}", param="version")
    session.add(RulesetPublication(version=version, action="rollback", actor=actor, reason=reason))
    session.flush()
    return version


def live_version(session: Session) -> int | None:
    return session.scalar(select(RulesetPublication.version).order_by(RulesetPublication.id.desc()).limit(1))


def source_of(session: Session, version: int) -> str:
    row = session.get(RulesetVersion, version)
    if row is None:
        raise NotFound(f"No such rule-set version: {version}", param="version")
    return row.source


def history(session: Session) -> list[dict]:
    rows = session.execute(select(RulesetPublication, RulesetVersion)
                           .join(RulesetVersion, RulesetVersion.version == RulesetPublication.version)
                           .order_by(RulesetPublication.id.desc())).all()
    return [{"version": p.version, "action": p.action, "actor": p.actor, "reason": p.reason,
             "at": p.created_at.isoformat() + "Z", "author": v.author, "comment": v.comment,
             "approved_by": p.approved_by,
             "checksum": v.checksum[:12]} for p, v in rows]


def announce(version: int | None, notify_others: bool = True) -> None:
    """Tell every process the live version: the Redis key they poll while not listening, and a
    change notice to those listening (best effort: they also fall back to the database)."""
    from app.adapters import notify
    from app.adapters.redis_conn import get_redis

    if version is None:
        return
    try:
        get_redis().set(LIVE_KEY, version)
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
