"""Read and validate the channels file (contract §4) into frozen ``ChannelSpec`` values.

- The file is YAML (or JSON), checked by ``schemas/channels.schema.json``.
- String values under ``config`` may use ``${VAR}`` or ``${VAR:-default}``; they are
  expanded from the environment (the default file uses ``PAYROUTER_SANDBOX_URL``).
- A channel's secret is never derived from anything public (contract §4). It comes from the
  environment variable named by ``config.secret_env``; when that is unset, a test channel
  uses the random secret ``payrouter init`` generated and stored encrypted (``stored``, a
  lookup the caller passes: app.adapters.channel_secrets), which the router and the sandbox both read.
  A live channel without its variable is refused.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import jsonschema
import yaml

from app.domain.errors import PayRouterError
from app.domain.money import CURRENCY_EXPONENTS, percent_of, round_minor

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schemas" / "channels.schema.json"
DEFAULT_CHANNELS_FILE = Path(__file__).resolve().parent / "channels.yaml"
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
    mode: str = "test"  # test | live: a channel carries only operations of its mode (contract §1, §4)


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _where(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def environment(env: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """Where ``${VAR}`` and ``secret_env`` names are looked up: the mapping the caller passes (the
    router passes its ``Config.channel_env``), else this process's environment (a sandbox run on
    its own, a plugin's tests). The one place channels read the environment."""
    return os.environ if env is None else env


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
    env = environment(env)
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
            mode=item.get("mode", "test"),
        ))
    return specs


# libyaml's safe loader where PyYAML was built with it (its wheels are): the file is read where each
# process starts and in every test, and the pure-Python parser is the larger part of loading channels.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def channels_path(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The channels file: ``path``, else ``PAYROUTER_CHANNELS``, else channels/channels.yaml."""
    return Path(path or environment(env).get("PAYROUTER_CHANNELS") or DEFAULT_CHANNELS_FILE)


def read_channels_data(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Any:
    """The channels file as loaded, not yet checked (``${VAR}`` unexpanded): what is stored in the
    database, so that each process expands the references from its own environment."""
    path = channels_path(path, env)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ChannelConfigError(f"cannot read channels file {path}: {exc.strerror or exc}") from exc
    try:
        return yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise ChannelConfigError(f"channels file {path} is not valid YAML: {exc}") from exc


def read_channels_file(path: str | os.PathLike | None = None,
                       env: Mapping[str, str] | None = None) -> list[ChannelSpec]:
    """Load the channels file (default: ``PAYROUTER_CHANNELS`` or channels/channels.yaml)."""
    return parse_channels(read_channels_data(path, env), env, source=f"channels file {channels_path(path, env)}")


StoredSecrets = Callable[[ChannelSpec], str]  # a test channel's generated secret (app.adapters.channel_secrets)


def needs_generated_secret(spec: ChannelSpec, env: Mapping[str, str] | None = None) -> bool:
    """A test channel whose ``secret_env`` is not set: it runs on a generated secret."""
    env = environment(env)
    name = spec.config.get("secret_env")
    return spec.mode == "test" and not (name and env.get(name))


def resolve_secret(spec: ChannelSpec, env: Mapping[str, str] | None = None,
                   stored: StoredSecrets | None = None, required: bool = True) -> str:
    """The channel's secret: the environment variable named by ``config.secret_env``, else (a test
    channel) its generated secret from ``stored``. ``required`` False (an adapter whose channel
    takes no secret, ``Channel.needs_secret``): the variable's value if set, else "" (none is invented)."""
    env = environment(env)
    name = spec.config.get("secret_env")
    value = env.get(name) if name else None
    if value or not required:
        return value or ""
    wanted = f"environment variable {name}" if name else "config.secret_env"
    if spec.mode != "test":
        raise ChannelConfigError(f"live channel {spec.id}: no secret ({wanted} is not set)")
    if stored is None:
        raise ChannelConfigError(f"channel {spec.id}: no secret ({wanted} is not set, and no generated "
                                 "secret store was given; `payrouter init` generates one)")
    return stored(spec)
