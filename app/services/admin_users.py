"""Console users (admin/): create, change role, disable, log in — with argon2id password hashes and
log-in throttling counted in the database (so it holds with or without Redis, across processes).

Throttling: failed log-ins are counted per user name and per client address over a 15-minute
window; from the 5th failure for a name (20th for an address) the key is locked for 30 s, doubling
with each further failure up to 15 min. While locked, every attempt — even with the right
password — is refused with ``LoginThrottled`` (HTTP 429 on the console)."""
from __future__ import annotations

import hashlib
import math
import re
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.adapters.db import unit_of_work
from app.adapters.models import AdminLoginFailure, AdminUser, utcnow
from app.domain.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, RateLimited
from app.services import audit

ROLES = ("viewer", "ops", "pm", "admin")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,79}\Z")  # \Z: "$" let a final newline in
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
WINDOW = timedelta(minutes=15)
USER_LIMIT, ADDR_LIMIT = 5, 20
FIRST_LOCK_SECONDS, MAX_LOCK_SECONDS = 30, 900

_hasher = PasswordHasher()  # argon2id, 64 MiB, 3 passes: memory-hard
_DUMMY_HASH = _hasher.hash("not a password anyone has")


class LoginThrottled(RateLimited):
    """Too many failed log-ins: try again later."""

    code = "login_throttled"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME.match(username):
        raise InvalidRequest("a user name is 1-80 letters, digits, '_', '.', '@' or '-', starting with a letter "
                             "or digit", param="username")
    return username


def _check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD or "\x00" in password:
        raise InvalidRequest(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters", param="password")
    return password


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidRequest(f"unknown role {role!r}: one of {', '.join(ROLES)}", param="role")
    return role


def representation(user: AdminUser) -> dict:
    return {"username": user.username, "role": user.role, "disabled": bool(user.disabled)}


def _get(session: Session, username: str, lock: bool = False) -> AdminUser:
    user = session.scalars(select(AdminUser).where(AdminUser.username == username)
                           .with_for_update(of=AdminUser) if lock else
                           select(AdminUser).where(AdminUser.username == username)).first()
    if user is None:
        raise NotFound(f"no console user {username!r}", param="username")
    return user


def list_users() -> list[AdminUser]:
    with unit_of_work() as session:
        return list(session.scalars(select(AdminUser).order_by(AdminUser.username)))


def get_by_id(user_id: int) -> AdminUser | None:
    with unit_of_work() as session:
        return session.get(AdminUser, user_id)


def create_user(username: str, password: str, role: str, actor: str) -> AdminUser:
    _check_username(username), _check_password(password), _check_role(role)
    password_hash = hash_password(password)
    try:
        with unit_of_work() as session:
            if session.scalars(select(AdminUser.id).where(AdminUser.username == username)).first() is not None:
                raise Conflict(f"console user {username!r} already exists", param="username")
            user = AdminUser(username=username, password_hash=password_hash, role=role, disabled=False)
            session.add(user)
            session.flush()
            audit.record(session, actor=actor, action="user.create", target=f"user:{username}",
                         before=None, after=representation(user))
    except IntegrityError:
        raise Conflict(f"console user {username!r} already exists", param="username") from None
    return user


def _active_admin(user: AdminUser) -> bool:
    return user.role == "admin" and not user.disabled


def _change(username: str, actor: str, action: str, reason: str | None, **changes) -> AdminUser:
    with unit_of_work() as session:
        admins = list(session.scalars(select(AdminUser).where(AdminUser.role == "admin", AdminUser.disabled.is_(False))
                                      .order_by(AdminUser.id).with_for_update()))  # two demotions at once: one waits
        user = _get(session, username, lock=True)
        before = representation(user)
        was_admin = _active_admin(user)
        for name, value in changes.items():
            setattr(user, name, value)
        if was_admin and not _active_admin(user) and not [a for a in admins if a.id != user.id]:
            raise Conflict(f"{username} is the last active admin: make another admin first", param="username")
        user.updated_at = utcnow()
        session.flush()
        after = representation(user)
        if after != before:
            audit.record(session, actor=actor, action=action, target=f"user:{username}", before=before,
                         after=after, reason=reason)
    return user


def set_role(username: str, role: str, actor: str, reason: str | None = None) -> AdminUser:
    return _change(username, actor, "user.set_role", reason, role=_check_role(role))


def set_disabled(username: str, disabled: bool, actor: str, reason: str | None = None) -> AdminUser:
    return _change(username, actor, "user.disable" if disabled else "user.enable", reason, disabled=bool(disabled))


def set_password(username: str, password: str, actor: str) -> AdminUser:
    with unit_of_work() as session:
        user = _get(session, username, lock=True)
        user.password_hash, user.updated_at = hash_password(_check_password(password)), utcnow()
        audit.record(session, actor=actor, action="user.set_password", target=f"user:{username}")
    return user


# -- logging in ------------------------------------------------------------------------------------

def _keys(username: str, address: str | None) -> list[tuple[str, int]]:
    if USERNAME.match(username):
        name = username.lower()
    else:  # a name no user can have (a NUL, say): counted under its digest, never stored as typed
        name = "#" + hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
    keys = [(f"user:{name}", USER_LIMIT)]
    if address:
        keys.append((f"addr:{address[:150].replace(chr(0), '')}", ADDR_LIMIT))
    return keys


def _retry_after(session: Session, keys: list[tuple[str, int]]) -> int:
    now, wait = utcnow(), 0
    for key, _limit in keys:
        row = session.get(AdminLoginFailure, key)
        if row is not None and row.locked_until is not None and row.locked_until > now:
            wait = max(wait, math.ceil((row.locked_until - now).total_seconds()))
    return wait


def _count_failure(keys: list[tuple[str, int]]) -> None:
    for key, limit in keys:
        for _attempt in range(3):  # two first failures of one key at once: one insert wins, the other counts again
            try:
                with unit_of_work() as session:
                    now = utcnow()
                    row = session.get(AdminLoginFailure, key, with_for_update=True)
                    if row is None:
                        row = AdminLoginFailure(key=key, failures=0, first_at=now)
                        session.add(row)
                    elif now - row.first_at > WINDOW and (row.locked_until is None or row.locked_until <= now):
                        row.failures, row.first_at, row.locked_until = 0, now, None
                    row.failures += 1
                    if row.failures >= limit:
                        seconds = min(FIRST_LOCK_SECONDS * 2 ** (row.failures - limit), MAX_LOCK_SECONDS)
                        row.locked_until = now + timedelta(seconds=seconds)
                break
            except IntegrityError:
                continue


def authenticate(username: str, password: str, address: str | None) -> AdminUser:
    """The user these credentials name, or ``AuthenticationFailed`` (one message whatever was wrong);
    ``LoginThrottled`` while the name or the address is locked out after failed attempts."""
    username = (username or "").strip()
    keys = _keys(username, address)
    with unit_of_work() as session:
        wait = _retry_after(session, keys)
    if wait:
        raise LoginThrottled(f"Too many failed log-ins. Try again in {wait} s.", retry_after=wait)
    user = None
    with unit_of_work() as session:
        if USERNAME.match(username):
            user = session.scalars(select(AdminUser).where(AdminUser.username == username)).first()
        try:  # a missing user costs the same hash as a wrong password
            _hasher.verify(user.password_hash if user is not None else _DUMMY_HASH, password or "")
            ok = user is not None and not user.disabled
        except (VerificationError, InvalidHashError):
            ok = False
        if ok:
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
            user.last_login_at = utcnow()
            session.execute(AdminLoginFailure.__table__.delete().where(AdminLoginFailure.key == keys[0][0]))
    if not ok:
        _count_failure(keys)
        raise AuthenticationFailed("Invalid user name or password.", code="login_failed")
    return user
