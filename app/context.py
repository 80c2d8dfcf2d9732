"""The unified context: one request id (plus merchant and object ids) that follows a
request through logs, database rows, RQ jobs, channel calls and outgoing webhooks.

Only this module knows how the context is carried; everything else calls it.
"""
from __future__ import annotations

import contextlib
import contextvars
import secrets

REQUEST_ID_HEADER = "X-Request-Id"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
merchant_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("merchant_id", default=None)
object_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("object_id", default=None)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def valid_request_id(value: str | None) -> bool:
    return bool(value) and len(value) <= 200 and all(33 <= ord(c) < 127 for c in value)


def current_request_id() -> str | None:
    return request_id_var.get()


def set_object_id(object_id: str | None) -> None:
    object_id_var.set(object_id)


def snapshot() -> dict:
    """The context as plain JSON-able data (for job meta, log lines, rows)."""
    return {
        "request_id": request_id_var.get(),
        "merchant_id": merchant_id_var.get(),
        "object_id": object_id_var.get(),
    }


@contextlib.contextmanager
def bound(request_id: str | None = None, merchant_id: str | None = None, object_id: str | None = None):
    """Run a block with the given context (a fresh request id if none is given)."""
    tokens = [
        (request_id_var, request_id_var.set(request_id or new_request_id())),
        (merchant_id_var, merchant_id_var.set(merchant_id)),
        (object_id_var, object_id_var.set(object_id)),
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def outgoing_headers(headers: dict | None = None) -> dict:
    """Headers for an outgoing HTTP call (channel or webhook) carrying the request id."""
    out = dict(headers or {})
    rid = request_id_var.get()
    if rid:
        out[REQUEST_ID_HEADER] = rid
    return out


def job_meta() -> dict:
    """What an RQ job needs to restore the context (stored in ``job.meta``)."""
    return {"payrouter_context": snapshot()}


def enqueue(queue, func, *args, **kwargs):
    """Enqueue an RQ job carrying the current context; the job runs inside ``run_in_context``."""
    meta = dict(kwargs.pop("meta", None) or {})
    meta.update(job_meta())
    return queue.enqueue(run_in_context, func, *args, meta=meta, **kwargs)


def enqueue_in(queue, delay, func, *args, **kwargs):
    meta = dict(kwargs.pop("meta", None) or {})
    meta.update(job_meta())
    return queue.enqueue_in(delay, run_in_context, func, *args, meta=meta, **kwargs)


def run_in_context(func, *args, **kwargs):
    """Job body wrapper: restores the context saved in the current job's meta."""
    from rq import get_current_job

    job = get_current_job()
    ctx = (job.meta.get("payrouter_context") if job else None) or {}
    if isinstance(func, str):
        import importlib

        module, _, name = func.rpartition(".")
        func = getattr(importlib.import_module(module), name)
    with bound(ctx.get("request_id"), ctx.get("merchant_id"), ctx.get("object_id")):
        return func(*args, **kwargs)
