"""Read and validate the channels file (contract §4) into frozen ``ChannelSpec`` values.

- The file is YAML (or JSON), checked by ``schemas/channels.schema.json``.
- String values under ``config`` may use ``${VAR}`` or ``${VAR:-default}``; they are
  expanded from the environment (the default file uses ``PAYROUTER_SANDBOX_URL``).
- Secrets come only from the environment: ``config.secret_env`` names the variable.
  When it is unset, a deterministic dev secret derived from the channel id is used if
  the adapter is a simulated one (``allows_dev_secret``, i.e. the sandbox) or if
  ``PAYROUTER_DEV_SECRETS=1``; ``PAYROUTER_DEV_SECRETS=0`` forbids the fallback.
  The router and the sandbox derive the same value, so the demo needs no setup.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from app.domain.errors import PayRouterError
from app.domain.money import CURRENCY_EXPONENTS, percent_of, round_minor

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schemas" / "channels.schema.json"
DEFAULT_CHANNELS_FILE = Path(__file__).resolve().parent / "channels.yaml"
DEV_SECRETS_ENV = "PAYROUTER_DEV_SECRETS"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ChannelConfigError(PayRouterError):
    """The channels file, or a channel's adapter or secret, is misconfigured."""

    code = "channel_config_invalid"


class UnknownChannel(ChannelConfigError, KeyError):
    """No channel with this id is configured."""

    code = "unknown_channel"

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Cost:
    """What the channel charges us per operation: percent (decimal string) plus fixed minor units."""

    percent: Decimal = Decimal(0)
    fixed: int = 0

    def fee(self, amount: int) -> int:
        """The channel's fee on ``amount`` minor units, rounded half-up (no floats)."""
        return round_minor(percent_of(amount, self.percent) + self.fixed)


@dataclass(frozen=True)
class ChannelSpec:
    id: str
    adapter: str
    methods: tuple[str, ...]
    currencies: tuple[str, ...]
    operations: tuple[str, ...]
    cost: Cost = Cost()
    timeout_ms: int = 3000
    enabled: bool = True
    config: Mapping[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _where(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def expand_env(value: Any, env: Mapping[str, str]) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in strings, recursively."""
    if isinstance(value, str):
        def sub(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            found = env.get(name)
            if found:
                return found
            if default is not None:
                return default
            raise ChannelConfigError(f"environment variable {name} is not set (used in the channels file)")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    return value


def parse_channels(data: Any, env: Mapping[str, str] | None = None,
                   source: str = "channels file") -> list[ChannelSpec]:
    """Validate already-loaded data (dict) and build the specs, in file order."""
    env = os.environ if env is None else env
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "; ".join(f"{_where(e)}: {e.message}" for e in errors[:5])
        raise ChannelConfigError(f"{source} is invalid: {lines}")
    specs: list[ChannelSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(data["channels"]):
        cid = item["id"]
        if cid in seen:
            raise ChannelConfigError(f"{source} is invalid: channels[{i}].id: duplicate channel id {cid!r}")
        seen.add(cid)
        unknown = [c for c in item["currencies"] if c not in CURRENCY_EXPONENTS]
        if unknown:
            raise ChannelConfigError(f"{source} is invalid: channels[{i}].currencies: unknown currency {unknown[0]}")
        cost = item.get("cost") or {}
        specs.append(ChannelSpec(
            id=cid,
            adapter=item["adapter"],
            methods=tuple(item["methods"]),
            currencies=tuple(item["currencies"]),
            operations=tuple(item["operations"]),
            cost=Cost(Decimal(str(cost.get("percent", "0"))), int(cost.get("fixed", 0))),
            timeout_ms=int(item.get("timeout_ms", 3000)),
            enabled=bool(item.get("enabled", True)),
            config=expand_env(dict(item.get("config") or {}), env),
        ))
    return specs


def read_channels_file(path: str | os.PathLike | None = None,
                       env: Mapping[str, str] | None = None) -> list[ChannelSpec]:
    """Load the channels file (default: ``PAYROUTER_CHANNELS`` or channels/channels.yaml)."""
    env = os.environ if env is None else env
    path = Path(path or env.get("PAYROUTER_CHANNELS") or DEFAULT_CHANNELS_FILE)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ChannelConfigError(f"cannot read channels file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ChannelConfigError(f"channels file {path} is not valid YAML: {exc}") from exc
    return parse_channels(data, env, source=f"channels file {path}")


def dev_secret(channel_id: str) -> str:
    """The deterministic development secret of a channel (never use for real money)."""
    digest = hmac.new(b"payrouter-dev-channel-secret", channel_id.encode(), hashlib.sha256).hexdigest()
    return "dev_" + digest[:40]


def resolve_secret(spec: ChannelSpec, allows_dev_secret: bool, env: Mapping[str, str] | None = None) -> str:
    """The channel's secret from the environment variable named by ``config.secret_env``."""
    env = os.environ if env is None else env
    name = spec.config.get("secret_env")
    value = env.get(name) if name else None
    if value:
        return value
    flag = env.get(DEV_SECRETS_ENV)
    if flag == "1" or (allows_dev_secret and flag != "0"):
        return dev_secret(spec.id)
    wanted = f"environment variable {name}" if name else "config.secret_env"
    raise ChannelConfigError(
        f"channel {spec.id}: no secret ({wanted} is not set; {DEV_SECRETS_ENV}=1 allows dev secrets)")
