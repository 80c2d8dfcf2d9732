"""Webhook endpoint service: create, read, list, delete, rotate the secret; URL safety checks."""
from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import context
from app.adapters import crypto
from app.adapters.models import IdempotencyKey, new_id, utcnow
from app.adapters.webhook_models import WebhookEndpoint
from app.config import get_config
from app.domain.errors import InvalidRequest, NotFound
from app.services.listing import ListQuery, Page, page
from app.services.representation import rfc3339
from app.services.webhooks import settings, signing

CREATE_PATH = "/v1/webhook_endpoints"
ROTATE_PATH = "/v1/webhook_endpoints/{}/rotate_secret"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and reaches: mapped (::ffff:a.b.c.d), 6to4
    (2002:aabb:ccdd::), NAT64 (64:ff9b::a.b.c.d) or the old IPv4-compatible form (::a.b.c.d)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        ip = inner
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
            or ip.is_unspecified or not ip.is_global)


def resolve(host: str, port: int | None) -> list[str]:
    """Every address ``host`` resolves to (a literal IP resolves to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]")).compressed]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))  # the resolver's order of preference


@dataclass(frozen=True)
class Target:
    """Where one webhook attempt connects: the addresses checked, not a second DNS answer. They are
    tried in turn while a connection cannot be made (nothing was sent yet)."""

    scheme: str
    addresses: tuple[str, ...]  # every address the check approved, in the resolver's order
    port: int
    hostname: str  # for the Host header, TLS SNI and certificate verification
    host_header: str
    path: str


def _form(url: str):
    """``url`` split, or why its form is refused."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "url is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "url must be an absolute http or https URL"
    if parts.username or parts.password:
        return "url must not carry credentials"
    return parts


def pin(url: str, allow_private: bool | None = None) -> Target | str:
    """Resolve ``url``'s host once, check every address, and return the target to connect to, or
    why not. Sending to the pinned address closes the DNS-rebinding window between a check and a
    second resolution at connect time."""
    parts = _form(url)
    if isinstance(parts, str):
        return parts
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:  # an internationalised name goes on the wire (Host, SNI, certificate check) in its ASCII form
        hostname = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return f"url host {parts.hostname!r} is not a valid host name"
    addresses = resolve(hostname, port)
    if not addresses:
        return f"url host {parts.hostname!r} does not resolve"
    allow = get_config().allow_private_webhooks if allow_private is None else allow_private
    if not allow and any(_is_private(a) for a in addresses):
        return "url points at a loopback, private or link-local address"
    default_port = (parts.scheme == "https" and port == 443) or (parts.scheme == "http" and port == 80)
    host = f"[{hostname}]" if ":" in hostname else hostname
    return Target(parts.scheme, tuple(addresses), port, hostname, host if default_port else f"{host}:{port}",
                  (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))


def check_url(url: str, allow_private: bool | None = None) -> str | None:
    """Why ``url`` may not receive webhooks, or None. Private/loopback/link-local hosts are refused
    unless ``Config.allow_private_webhooks`` (then the host is not resolved here)."""
    allow = get_config().allow_private_webhooks if allow_private is None else allow_private
    problem = _form(url) if allow else pin(url, allow_private=False)
    return problem if isinstance(problem, str) else None


def representation(endpoint: WebhookEndpoint, secret: str | None = None) -> dict:
    out = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "livemode": endpoint.livemode,
        "created_at": rfc3339(endpoint.created_at),
        "url": endpoint.url,
        "enabled_events": list(endpoint.enabled_events),
        "description": endpoint.description,
        "metadata": endpoint.metadata_ or {},
        "status": "enabled",
        "previous_secret_expires_at": rfc3339(endpoint.previous_secret_expires_at),
    }
    if secret is not None:
        out["secret"] = secret
    return out


def create_endpoint(session: Session, merchant_id: str, body: dict,
                    livemode: bool = False) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (the only time the secret is returned)."""
    problem = check_url(body["url"])
    if problem:
        raise InvalidRequest(problem, param="url", code="url_invalid")
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        id=new_id("we"), merchant_id=merchant_id, livemode=livemode, url=body["url"],
        enabled_events=list(body["enabled_events"]),
        description=body.get("description"), metadata_=body.get("metadata") or {}, secret=secret,
        request_id=context.current_request_id(), created_at=utcnow())
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def get_endpoint(session: Session, merchant_id: str, endpoint_id: str, livemode: bool = False,
                 param: str = "id") -> WebhookEndpoint:
    """The merchant's endpoint of this mode, not deleted, else 404 naming ``param`` (the path's
    ``id``, or the body field that named it)."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if (endpoint is None or endpoint.merchant_id != merchant_id or endpoint.livemode != livemode
            or endpoint.deleted_at is not None):
        raise NotFound(f"No such webhook endpoint: '{endpoint_id}'", param=param)
    return endpoint


def list_endpoints(session: Session, merchant_id: str, query: ListQuery, livemode: bool = False) -> Page:
    return page(session, WebhookEndpoint, merchant_id=merchant_id, query=query,
                where=(WebhookEndpoint.livemode == livemode, WebhookEndpoint.deleted_at.is_(None)))


def delete_endpoint(session: Session, merchant_id: str, endpoint_id: str, livemode: bool = False) -> dict:
    """Soft-delete; its secrets are erased, here and in the stored responses of its creation and
    rotations, so they are never shown (not even by replaying an Idempotency-Key) nor used again."""
    endpoint = get_endpoint(session, merchant_id, endpoint_id, livemode)
    endpoint.deleted_at = utcnow()
    endpoint.secret = endpoint.previous_secret = None
    endpoint.previous_secret_expires_at = None
    _redact_stored_responses(session, merchant_id, endpoint_id)
    return {"id": endpoint.id, "object": "webhook_endpoint", "deleted": True}


def _redact_stored_responses(session: Session, merchant_id: str, endpoint_id: str) -> None:
    """Drop ``secret`` from the stored responses that showed this endpoint's secret (they hold it
    encrypted, see ``seal``): its creation (among the merchant's creations kept, the one whose
    body names it) and its rotations."""
    paths = (CREATE_PATH, ROTATE_PATH.format(endpoint_id))
    for row in session.scalars(select(IdempotencyKey).where(
            IdempotencyKey.merchant_id == merchant_id, IdempotencyKey.endpoint.in_(paths),
            IdempotencyKey.status == "done", IdempotencyKey.response_status < 300)):
        body = json.loads(row.response_body)
        if body.get("id") == endpoint_id and "secret" in body:
            del body["secret"]
            row.response_body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def unseal(session: Session, merchant_id: str, payload: dict) -> dict:
    """A stored response as shown: its sealed ``secret`` decrypted while the endpoint exists, left
    out once it is deleted."""
    def exists(endpoint_id: str | None) -> bool:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        return endpoint is not None and endpoint.merchant_id == merchant_id and endpoint.deleted_at is None

    return crypto.unseal_secret(payload, exists)


def rotate_secret(session: Session, merchant_id: str, endpoint_id: str,
                  overlap_seconds: int | None = None, livemode: bool = False) -> tuple[WebhookEndpoint, str]:
    """A new secret; the old one keeps signing (as a second signature) for the overlap window."""
    endpoint = get_endpoint(session, merchant_id, endpoint_id, livemode)
    overlap = settings().secret_overlap if overlap_seconds is None else overlap_seconds
    endpoint.previous_secret = endpoint.secret if overlap > 0 else None
    endpoint.previous_secret_expires_at = utcnow() + timedelta(seconds=overlap) if overlap > 0 else None
    secret = signing.new_secret()
    endpoint.secret = secret
    return endpoint, secret


def signing_secrets(endpoint: WebhookEndpoint, now=None) -> list[str]:
    """The secrets a delivery is signed with now: the current one, plus the previous one in its overlap."""
    now = now or utcnow()
    out = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        out.append(endpoint.previous_secret)
    return out
