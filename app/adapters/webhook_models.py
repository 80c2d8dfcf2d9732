"""Webhook tables: endpoints, one delivery per (event, endpoint, generation), one row per attempt."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.adapters import crypto
from app.adapters.models import Base, utcnow

PENDING, SENDING, SUCCEEDED, FAILED = "pending", "sending", "succeeded", "failed"


class WebhookEndpoint(Base):
    """A merchant's URL and the event types it subscribes to ("*" = all). Deleted = soft-deleted."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_list", "merchant_id", "livemode", "created_at", "id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # gets its mode's events
    url: Mapped[str] = mapped_column(String(2048))
    enabled_events: Mapped[list] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(1000))
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    # Encrypted (app.adapters.crypto); read and set in clear through ``secret`` and ``previous_secret``.
    # Both are cleared when the endpoint is deleted: its secret is never shown or used again.
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    @property
    def secret(self) -> str | None:
        return crypto.decrypt(self.secret_encrypted) if self.secret_encrypted else None

    @secret.setter
    def secret(self, value: str | None) -> None:
        self.secret_encrypted = crypto.encrypt(value) if value else None

    @property
    def previous_secret(self) -> str | None:
        return crypto.decrypt(self.previous_secret_encrypted) if self.previous_secret_encrypted else None

    @previous_secret.setter
    def previous_secret(self, value: str | None) -> None:
        self.previous_secret_encrypted = crypto.encrypt(value) if value else None

    def subscribes(self, event_type: str) -> bool:
        return self.deleted_at is None and ("*" in self.enabled_events or event_type in self.enabled_events)


class WebhookDelivery(Base):
    """Sending one event to one endpoint. ``generation`` 0 comes from the relay, 1.. from redeliveries.

    ``attempts`` counts attempts started; moving to ``sending`` is compare-and-set on
    (status, attempts), so a duplicated job never sends the same attempt twice.
    ``enqueued_at`` is when a job was last queued for it (NULL: none is known to be queued).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", "generation", name="uq_webhook_deliveries_generation"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_list", "merchant_id", "livemode", "created_at", "id"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_created", "created_at", "id"),  # the admin console (0014)
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), index=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(10), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime)
    leased_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    request_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)


class WebhookAttempt(Base):
    """The log of one HTTP attempt: when, the status code (None: no answer), latency, error."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number", name="uq_webhook_attempts_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    request_id: Mapped[str | None] = mapped_column(String(200))
