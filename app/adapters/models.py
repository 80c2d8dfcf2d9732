"""SQLAlchemy 2.x models. Every row a request writes records that request's id."""
from __future__ import annotations

import secrets
import string
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_ALPHABET = string.ascii_letters + string.digits
_PAIRS = [_ALPHABET[low] + _ALPHABET[high] for high in range(62) for low in range(62)]  # index: 62·high + low


def new_id(prefix: str) -> str:
    """``prefix_`` + 24 base-62 characters (about 143 random bits), the low digits of 18 random
    bytes, least significant first, two characters per division."""
    number = int.from_bytes(secrets.token_bytes(18), "big")
    chars = []
    for _ in range(12):
        number, pair = divmod(number, 3844)
        chars.append(_PAIRS[pair])
    return f"{prefix}_" + "".join(chars)


def utcnow() -> datetime:
    """Naive UTC (stored the same way on SQLite and PostgreSQL)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {int: BigInteger, dict: JSON}


class Merchant(Base):
    __tablename__ = "merchants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    # Not a column: a merchant used as such acts in test mode; a request acts in its key's mode
    # (app.services.merchants.MerchantScope).
    livemode = False


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    mode: Mapped[str] = mapped_column(String(4))  # test | live
    prefix: Mapped[str] = mapped_column(String(20))  # shown in listings, e.g. sk_test_ab12
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)  # a rolled key's overlap, or a chosen expiry
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)  # to the minute (app.services.merchants)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10))  # in_flight | done
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    locked_until: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Account(Base):
    """A ledger account: a customer's stored-value wallet, or a system account."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("merchant_id", "reference", name="uq_accounts_reference"),
        UniqueConstraint("merchant_id", "system_code", "currency", name="uq_accounts_system"),
        CheckConstraint("kind <> 'customer' OR (available >= 0 AND pending >= 0)", name="ck_accounts_no_overdraft"),
        Index("ix_accounts_list", "merchant_id", "livemode", "created_at", "id"),
        # a list filtered by customer (0018)
        Index("ix_accounts_list_customer", "merchant_id", "livemode", text("(customer ->> 'id')"), "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    kind: Mapped[str] = mapped_column(String(10))  # customer | system
    system_code: Mapped[str | None] = mapped_column(String(80))
    currency: Mapped[str] = mapped_column(String(3))
    customer: Mapped[dict | None] = mapped_column(JSON)
    reference: Mapped[str | None] = mapped_column(String(200))
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    available: Mapped[int] = mapped_column(default=0)
    pending: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class JournalEntry(Base):
    """One balanced posting: its lines sum to zero per currency."""

    __tablename__ = "journal_entries"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # No index of its own: nothing reads entries by merchant, and merchants are never deleted (0027).
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    kind: Mapped[str] = mapped_column(String(40))
    source_id: Mapped[str | None] = mapped_column(String(40), index=True)
    description: Mapped[str | None] = mapped_column(String(500))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LedgerLine(Base):
    __tablename__ = "ledger_lines"
    __table_args__ = (Index("ix_ledger_lines_account", "account_id", "created_at", "id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("journal_entries.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    balance_type: Mapped[str] = mapped_column(String(10))  # available | pending
    amount: Mapped[int] = mapped_column()  # signed minor units: + raises the account's balance
    currency: Mapped[str] = mapped_column(String(3))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AccountMove(Base):
    """A system account's balance move, queued by the posting that made it and applied to the
    account's row by ``ledger.apply_queued_moves`` (the posting's lines are the record; see
    app.services.ledger on hot accounts). No foreign key: the posting's lines already hold one."""

    __tablename__ = "account_moves"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(40))
    balance_type: Mapped[str] = mapped_column(String(10))
    delta: Mapped[int] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Transfer(Base):
    __tablename__ = "transfers"
    __table_args__ = (
        UniqueConstraint("merchant_id", "reference", name="uq_transfers_reference"),
        Index("ix_transfers_list", "merchant_id", "livemode", "created_at", "id"),
        Index("ix_transfers_created", "created_at", "id"),  # the admin search (0014)
        Index("ix_transfers_reference", "reference"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    from_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    to_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3))
    reference: Mapped[str] = mapped_column(String(200))
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Event(Base):
    """Transactional outbox: written in the same transaction as the change it describes."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("object_id", "type", name="uq_events_object_type"),
        Index("ix_events_list", "merchant_id", "livemode", "created_at", "id"),
        # The relay's queue, in its order: only unrelayed events are in it, so marking one relayed
        # adds no entry (0027; the predicate written as each backend renders ``relayed.is_(False)``).
        Index("ix_events_unrelayed", "created_at", "id", postgresql_where=text("relayed IS false"),
              sqlite_where=text("relayed IS 0")),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # the object's mode
    type: Mapped[str] = mapped_column(String(60))
    object_id: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict] = mapped_column(JSON)
    request_id: Mapped[str | None] = mapped_column(String(200))
    relayed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RulesetVersion(Base):
    __tablename__ = "ruleset_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str | None] = mapped_column(String(40))  # None: the platform set
    source: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RulesetPublication(Base):
    """Who made which version live, when; each owner's (platform or merchant) newest row is its live version."""

    __tablename__ = "ruleset_publications"
    __table_args__ = (Index("ix_ruleset_publications_merchant", "merchant_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str | None] = mapped_column(String(40))  # None: the platform set
    version: Mapped[int] = mapped_column(ForeignKey("ruleset_versions.version"))
    action: Mapped[str] = mapped_column(String(10))  # publish | rollback
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(1000))
    approved_by: Mapped[str | None] = mapped_column(String(200))  # four-eyes: the second person
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RulesetRequest(Base):
    """A rule set awaiting a second person's approval (PAYROUTER_RULES_APPROVAL=1) before it goes live."""

    __tablename__ = "ruleset_requests"
    __table_args__ = (Index("ix_ruleset_requests_status", "status", "merchant_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str | None] = mapped_column(String(40))  # None: the platform set
    source: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(1000))
    dropped: Mapped[list] = mapped_column(JSON, default=list)  # live rule ids it removes (confirmed)
    status: Mapped[str] = mapped_column(String(10))  # pending | approved | rejected
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    note: Mapped[str | None] = mapped_column(String(1000))
    version: Mapped[int | None] = mapped_column(ForeignKey("ruleset_versions.version"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Switch(Base):
    """A degradation switch: channel:<id>, operation:<type>, webhooks, read_only. on = degraded."""

    __tablename__ = "switches"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    on: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(String(1000))
    updated_by: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_created_at", "created_at"),
                      Index("ix_audit_log_actor", "actor", "created_at"),
                      Index("ix_audit_log_target", "target", "created_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(String(1000))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AdminUser(Base):
    """A person who logs in to the admin console (admin/): a role, an argon2 password hash."""

    __tablename__ = "admin_users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # viewer | ops | pm | admin
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)


class AdminLoginFailure(Base):
    """Failed console log-ins counted per key (``user:<name>`` or ``addr:<client address>``): enough
    of them lock the key out for a while (app.services.admin_users), with or without Redis."""

    __tablename__ = "admin_login_failures"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)


class Order(Base):
    """A merchant's sale (``ord_…``): payments and refunds name it with ``order_id``. Its sums and
    status change only by compare-and-set on ``version`` (app.services.orders); ``amount_in_flight``
    holds what its payments not yet final have reserved, so none can pay it beyond ``amount``."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("merchant_id", "reference", name="uq_orders_reference"),
        CheckConstraint("amount_paid + amount_in_flight <= amount AND amount_in_flight >= 0 "
                        "AND amount_refunded >= 0 AND amount_refunded <= amount_paid", name="ck_orders_amounts"),
        Index("ix_orders_list", "merchant_id", "livemode", "created_at", "id"),
        # the list filtered by status or customer, in its order (as 0018 does for the other lists)
        Index("ix_orders_list_status", "merchant_id", "livemode", "status", "created_at", "id"),
        Index("ix_orders_list_customer", "merchant_id", "livemode", text("(customer ->> 'id')"), "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    amount: Mapped[int] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3))
    reference: Mapped[str] = mapped_column(String(200))
    customer: Mapped[dict | None] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(1000))
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    amount_paid: Mapped[int] = mapped_column(default=0)
    amount_in_flight: Mapped[int] = mapped_column(default=0)
    amount_refunded: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(20), default="open")
    version: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# An operation's, attempt's or callback's status: up to 20 characters (requires_capture is 16; 0016
# widened it from 12). SQLite does not enforce a VARCHAR's length, and changing the declared one
# there would mean copying tables others refer to, so an embedded database keeps 12 on record.
STATUS = String(20).with_variant(String(12), "sqlite")


class Operation(Base):
    """A payment-like money movement through a channel (or the ledger): payment, topup,
    withdrawal or refund. One table, one state machine, one compare-and-set."""

    __tablename__ = "operations"
    __table_args__ = (
        UniqueConstraint("merchant_id", "kind", "reference", name="uq_operations_reference"),
        UniqueConstraint("merchant_id", "idempotency_key", name="uq_operations_idempotency"),
        CheckConstraint("amount_refunded >= 0 AND amount_refunded <= amount", name="ck_operations_refund_bound"),
        Index("ix_operations_list", "merchant_id", "livemode", "kind", "created_at", "id"),
        # The status-query sweep's: only operations with a next query (a final status clears it), so
        # a payment's settlement adds no entry; likewise a refund's payment and an order, which most
        # rows have none of (0027: every write of a row adds an entry to each index it is in).
        Index("ix_operations_due", "status", "next_query_at", postgresql_where=text("next_query_at IS NOT NULL"),
              sqlite_where=text("next_query_at IS NOT NULL")),
        Index("ix_operations_payment_id", "payment_id", postgresql_where=text("payment_id IS NOT NULL"),
              sqlite_where=text("payment_id IS NOT NULL")),
        # The admin search, newest first across merchants, and the dashboard (0014_admin_search).
        Index("ix_operations_created", "created_at", "id"),
        Index("ix_operations_status_created", "status", "created_at", "id"),
        Index("ix_operations_channel_created", "channel", "created_at", "id"),
        Index("ix_operations_merchant_created", "merchant_id", "created_at", "id"),
        Index("ix_operations_reference", "reference"),
        Index("ix_operations_customer", text("(customer ->> 'id')")),
        # a merchant's list filtered by status, channel or customer, in its order (0018)
        Index("ix_operations_list_status", "merchant_id", "livemode", "kind", "status", "created_at", "id"),
        Index("ix_operations_list_channel", "merchant_id", "livemode", "kind", "channel", "created_at", "id"),
        Index("ix_operations_list_customer", "merchant_id", "livemode", "kind", text("(customer ->> 'id')"),
              "created_at", "id"),
        Index("ix_operations_order", "order_id", "created_at", "id", postgresql_where=text("order_id IS NOT NULL"),
              sqlite_where=text("order_id IS NOT NULL")),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    kind: Mapped[str] = mapped_column(String(12))  # payment | topup | withdrawal | refund
    status: Mapped[str] = mapped_column(STATUS)  # app.domain.states
    version: Mapped[int] = mapped_column(Integer, default=0)
    amount: Mapped[int] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3))
    fee: Mapped[int] = mapped_column(default=0)
    amount_refunded: Mapped[int] = mapped_column(default=0)
    reference: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(1000))
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    customer: Mapped[dict | None] = mapped_column(JSON)
    payment_method: Mapped[dict | None] = mapped_column(JSON)
    destination: Mapped[dict | None] = mapped_column(JSON)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"))
    payment_id: Mapped[str | None] = mapped_column(ForeignKey("operations.id"))  # refunds (ix_operations_payment_id)
    # The order a payment names; a refund's is its payment's (ix_operations_order: an order's payments
    # and refunds). No foreign key: SQLite can drop a column only if no foreign key holds it, and the
    # service writes an order's id only after reading that order (orders are never deleted).
    order_id: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(String(40))
    routing: Mapped[dict] = mapped_column(JSON, default=dict)
    channel: Mapped[str | None] = mapped_column(String(100))
    channel_reference: Mapped[str | None] = mapped_column(String(200))
    limit_reservation: Mapped[dict | None] = mapped_column(JSON)
    failure_code: Mapped[str | None] = mapped_column(String(60))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    next_query_at: Mapped[datetime | None] = mapped_column(DateTime)
    query_count: Mapped[int] = mapped_column(Integer, default=0)
    # The channel acknowledged it, then answered a status query "unknown operation": it stays
    # processing, flagged for review (and a reconciliation issue) until the channel or ops settle it.
    review: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Payments (0016): "manual" stops an authorization at requires_capture; amount_captured is set
    # by a capture (None: captured in full, or not captured); capture_before, when the channel voids
    # an uncaptured authorization; next_action, where the customer completes a step (requires_action).
    capture_method: Mapped[str | None] = mapped_column(String(10))
    amount_captured: Mapped[int | None] = mapped_column()
    capture_before: Mapped[datetime | None] = mapped_column(DateTime)
    next_action: Mapped[dict | None] = mapped_column(JSON)
    # The merchant's channel account (mca_…) whose credentials carry it on ``channel`` (None: the
    # platform's): its status queries, capture, void and refunds use the same (0023).
    channel_account_id: Mapped[str | None] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Dispute(Base):
    """A chargeback (``dp_…``) the channel of a payment reported (app.services.disputes): one per channel
    and channel reference, so a repeated report changes nothing; its status changes only by
    compare-and-set on ``version`` (app.domain.disputes)."""

    __tablename__ = "disputes"
    __table_args__ = (
        UniqueConstraint("channel", "channel_reference", name="uq_disputes_channel_reference"),
        Index("uq_disputes_reference", "merchant_id", "reference", unique=True),  # serves the reference filter
        Index("ix_disputes_list", "merchant_id", "livemode", "created_at", "id"),
        Index("ix_disputes_list_status", "merchant_id", "livemode", "status", "created_at", "id"),
        Index("ix_disputes_list_payment", "merchant_id", "livemode", "payment_id", "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    payment_id: Mapped[str] = mapped_column(ForeignKey("operations.id"))
    amount: Mapped[int] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(60))
    status: Mapped[str] = mapped_column(String(20))  # needs_response | won | lost
    version: Mapped[int] = mapped_column(Integer, default=0)
    channel: Mapped[str] = mapped_column(String(100))
    channel_reference: Mapped[str] = mapped_column(String(200))
    # the merchant channel account (0023) of the disputed payment; None: the platform's (its statement)
    channel_account_id: Mapped[str | None] = mapped_column(String(40))
    reference: Mapped[str | None] = mapped_column(String(200))  # the channel's object: None (contract §1)
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict, server_default=text("'{}'"))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)


class Attempt(Base):
    """One call to one channel for an operation (failover makes several)."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("operation_id", "seq", name="uq_attempts_seq"),
                      Index("ix_attempts_channel_ref", "channel", "channel_reference"),
                      # a reconciliation pass reads the outcomes of its window: proportional to the window
                      Index("ix_attempts_channel_updated", "channel", "updated_at"),
                      Index("ix_attempts_created", "created_at"))  # channel stats over the last minutes
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Looked up by operation through uq_attempts_seq (operation_id, seq): no index of its own.
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id"))
    seq: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(100))
    # processing | requires_capture (an authorization) | succeeded | failed | canceled | unknown
    status: Mapped[str] = mapped_column(STATUS)
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(String(500))
    channel_reference: Mapped[str | None] = mapped_column(String(200))
    raw: Mapped[dict | None] = mapped_column(JSON)
    # How long the channel took to answer the call (None: not answered yet, or before 0013).
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # Whose credentials made the call: a merchant's channel account (mca_…), or None, the platform's.
    # Reconciliation matches each account's statement with that account's attempts (0023).
    channel_account_id: Mapped[str | None] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ChannelAccount(Base):
    """A merchant's own credentials for a channel (contract §4, ``mca_…``), stored encrypted
    (app.adapters.crypto) and never shown again. At most one live account per merchant, mode and
    channel; deleting one stops new operations using it, while the operations it already carries
    (status queries, capture, refunds, reconciliation) keep their credentials."""

    __tablename__ = "channel_accounts"
    __table_args__ = (
        Index("ix_channel_accounts_list", "merchant_id", "livemode", "created_at", "id"),
        Index("uq_channel_accounts_live", "merchant_id", "livemode", "channel", unique=True,
              postgresql_where=text("deleted_at IS NULL"), sqlite_where=text("deleted_at IS NULL")),
        Index("uq_channel_accounts_credentials", "channel", "credentials_digest", unique=True,
              postgresql_where=text("deleted_at IS NULL"), sqlite_where=text("deleted_at IS NULL")),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    channel: Mapped[str] = mapped_column(String(100))
    credentials_encrypted: Mapped[str] = mapped_column(Text)  # a JSON object of strings, encrypted
    # HMAC of the credentials (app.services.channel_accounts.credentials_digest): one live account
    # per channel holds the same credentials (0026; None: brought before it)
    credentials_digest: Mapped[str | None] = mapped_column(String(64))
    verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # the PSP took them
    credential_fields: Mapped[list] = mapped_column(JSON, default=list)  # its names, shown
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CircuitOverride(Base):
    """A channel's circuit opened by hand (app.services.circuit_overrides): open until an operator closes
    it, whatever the breaker counts. No row: the breaker decides."""

    __tablename__ = "circuit_overrides"
    channel: Mapped[str] = mapped_column(String(100), primary_key=True)
    opened_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(1000))
    opened_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ChannelCallback(Base):
    """Inbox of verified channel callbacks, kept before any work is queued (no loss)."""

    __tablename__ = "channel_callbacks"
    __table_args__ = (UniqueConstraint("dedupe_key", name="uq_channel_callbacks_dedupe"),
                      Index("ix_channel_callbacks_pending", "processed_at", "received_at"),
                      Index("ix_channel_callbacks_reference", "reference"))  # an operation's callbacks
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(100))
    dedupe_key: Mapped[str] = mapped_column(String(300))
    reference: Mapped[str | None] = mapped_column(String(200))
    channel_reference: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(STATUS)
    error_code: Mapped[str | None] = mapped_column(String(60))
    body: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(40))  # applied | duplicate | attempt_mismatch | …
    # A callback reporting a dispute (0021): what it says of it (channels.base.DisputeNotice as a dict);
    # ``reference`` and ``channel_reference`` are then the disputed payment's.
    dispute: Mapped[dict | None] = mapped_column(JSON)
    request_id: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)


class ReconciliationRun(Base):
    """One comparison of our records with a channel's statement: a whole day (``daily``, the batch
    command) or the minutes since the previous pass (``continuous``, run by batch workers)."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (Index("ix_reconciliation_runs_window", "channel", "mode", "window_end"),
                      Index("ix_reconciliation_runs_created", "created_at", "id"))
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(100), index=True)
    day: Mapped[str] = mapped_column(String(10))
    mode: Mapped[str] = mapped_column(String(12), default="daily")
    window_start: Mapped[datetime | None] = mapped_column(DateTime)
    window_end: Mapped[datetime | None] = mapped_column(DateTime)
    statement_lines: Mapped[int] = mapped_column(Integer)
    matched: Mapped[int] = mapped_column(Integer)
    issues: Mapped[list] = mapped_column(JSON)
    issue_count: Mapped[int] = mapped_column(Integer, default=0)  # filterable in SQL, unlike JSON
    channel_fees: Mapped[int] = mapped_column(default=0)
    # lines, matched, by_class, theirs/ours totals by currency, seconds (None: runs stored before it)
    summary: Mapped[dict | None] = mapped_column(JSON)
    # A merchant's channel account whose statement this run read (None: the platform's), 0023.
    channel_account: Mapped[str | None] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ReconciliationIssue(Base):
    """One discrepancy between us and a channel (``kind``: missing_in_payrouter, status_mismatch,
    fee_mismatch, unknown_at_channel, …), open until an operator resolves it with a note (or the
    channel settles what it was about). Found again by a later run, it is the same issue: one row
    per channel, kind and channel reference."""

    __tablename__ = "reconciliation_issues"
    __table_args__ = (UniqueConstraint("channel", "kind", "channel_reference", name="uq_reconciliation_issues_key"),
                      Index("ix_reconciliation_issues_open", "status", "channel"),
                      Index("ix_reconciliation_issues_status_created", "status", "created_at", "id"))
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(String(40))  # the run that found it first (None: a status query)
    channel: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(40))
    channel_reference: Mapped[str] = mapped_column(String(200))
    operation_id: Mapped[str | None] = mapped_column(String(40), index=True)
    ours: Mapped[dict | None] = mapped_column(JSON)
    theirs: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="open")  # open | resolved
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime)
    resolution_note: Mapped[str | None] = mapped_column(String(1000))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# Which run found which issue: every run that found it, not only the first (``ReconciliationIssue.run_id``),
# so a run's export lists all it found, the issues earlier passes recorded included (migration 0025).
reconciliation_run_issues = Table(
    "reconciliation_run_issues", Base.metadata,
    Column("run_id", String(40), primary_key=True),
    Column("issue_id", String(40), primary_key=True),
)


# A channel's statement lines as they stream in, one load per reconciliation pass
# (app.adapters.staging): matched set-wise against attempts, then deleted. Rows only, no mapped class:
# nothing builds an object per line. Unlogged on PostgreSQL (migration 0019): a crash loses only a
# pass, which is run again.
reconciliation_lines = Table(
    "reconciliation_lines", Base.metadata,
    Column("load_id", String(40), nullable=False),
    Column("channel_reference", String(200), nullable=False),
    Column("operation", String(20), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(20), nullable=False),  # a dispute line's needs_response is 14 (0021)
    Column("fee", BigInteger, nullable=False),
    Column("settled_at", DateTime, nullable=False),
    Index("ix_reconciliation_lines_ref", "load_id", "channel_reference"),
)


class ChannelSecret(Base):
    """A test channel's secret generated at random by ``payrouter init`` (when its ``secret_env``
    is unset), stored encrypted (app.adapters.crypto): the router and the sandbox read this same one."""

    __tablename__ = "channel_secrets"
    channel_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ChannelDefinition(Base):
    """One channel as the channels file defines it (contract §4), the source of truth once ``payrouter
    init`` or ``payrouter channels import`` wrote it: ``definition`` is the file's item with its
    ``${VAR}`` references unexpanded (each process expands them from its own environment)."""

    __tablename__ = "channels"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)  # the order of the file the channel was last imported from
    definition: Mapped[dict] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
