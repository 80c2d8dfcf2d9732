"""Outgoing webhooks (Standard Webhooks): endpoints, signing, the outbox relay and delivery jobs.

Flow: a state change writes an ``Event`` in its own transaction (app.services.events). The relay
(relay.py) turns every unrelayed event into one delivery row per subscribed endpoint and
enqueues a job on the WEBHOOKS queue; the job (delivery.py) makes one compare-and-set
attempt and schedules the next one from ``Config.webhook_retry_schedule``.

Private addresses: an endpoint's host is resolved and every address checked when it is saved and
again at each attempt, and the attempt connects to the address it checked (endpoints.pin), so
a DNS answer that changes between check and connect cannot reach a private address.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.config import Config, get_config


@dataclass(frozen=True)
class Settings:
    """The webhook knobs of ``Config`` (PAYROUTER_WEBHOOK_*), by their short names."""

    timeout: float  # seconds per attempt
    secret_overlap: int  # seconds the previous secret keeps signing after a rotation
    sweep_grace: int  # seconds a due, enqueued delivery may wait before the sweep re-enqueues it
    lease_margin: int  # seconds past the timeout before a 'sending' delivery counts as lost


def settings(config: Config | None = None) -> Settings:
    config = config or get_config()
    return Settings(timeout=config.webhook_timeout, secret_overlap=config.webhook_secret_overlap,
                    sweep_grace=config.webhook_sweep_grace, lease_margin=config.webhook_lease_margin)
