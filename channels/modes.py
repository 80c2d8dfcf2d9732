"""Test and live channels (contract §1, §4).

A channel's ``mode`` (``test`` unless the file says ``live``) decides which operations it may
carry: those made with a key of the same mode. A live channel moves real money, so it runs
only on a secret the operator gave it, in the environment variable named by its
``config.secret_env``; never on one derived, defaulted or generated for tests. A process that
would load a live channel without one refuses to start (``require_live_secrets``).
"""
from __future__ import annotations

from typing import Iterable, Mapping

from channels.config import ChannelConfigError, ChannelSpec, environment

TEST, LIVE = "test", "live"


def mode_of(livemode: bool) -> str:
    return LIVE if livemode else TEST


def live_without_secret(specs: Iterable[ChannelSpec], env: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with each live channel whose secret is not in its environment variable."""
    env = environment(env)
    problems = []
    from channels.registry import needs_secret

    for spec in specs:
        if spec.mode != LIVE or not needs_secret(spec):
            continue
        name = spec.config.get("secret_env")
        if not name:
            problems.append(f"{spec.id}: config.secret_env is not set")
        elif not env.get(name):
            problems.append(f"{spec.id}: environment variable {name} is not set")
    return problems


def require_live_secrets(specs: Iterable[ChannelSpec], env: Mapping[str, str] | None = None) -> None:
    """Raise ChannelConfigError naming every live channel without its secret from the environment."""
    problems = live_without_secret(specs, env)
    if problems:
        raise ChannelConfigError(
            "refusing to start: a live channel runs only on a secret from the environment variable named by "
            "its config.secret_env, never on a derived or default one (" + "; ".join(problems) + ")")
