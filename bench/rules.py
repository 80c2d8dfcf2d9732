"""Decision latency and throughput: durable-rules engine vs the Python reference evaluator.

    .venv/bin/python bench/rules.py [--requests 20000] [--sizes 10,100,1000] [--adversarial 100,1000]
                                    [--adversarial-bytes 10240] [--merchant-rules 20] [--merchants 0]

Measures the whole ``rules.decide.decide()`` call (flatten, match, resolve, fee), not only the
engine, on generated but realistic rule sets; prints a markdown table. Then the adversarial
case (``--adversarial N,…``, 0 to skip): the generated set of N rules plus rules whose ``matches``
backtracks exponentially in Python's ``re`` (``^(a+)+$``, ``(x+x+)+y``), against requests whose
customer e-mail is 10 KB (``--adversarial-bytes``) of ``aaaa…!`` or ``xxxx…`` (each pattern's worst
input, half and half). The API admits at most 320 characters of e-mail and 500 of a metadata value.
With ``--merchant-rules M`` (0 to skip) each size is measured again with a merchant's own set of M
generated rules decided beside it (contract §3: both sets matched, then combined): once with both
sets compiled as one (``rules.decide.paired``, one engine match: what a serving process does) and once
with each set matched apart (two engine matches: simulate beside a draft, or a pair over the limits);
then once more with the merchant's routes as ``success_rate`` routes, their outcome counts given (the
whole decision's CPU; the Redis read is one round trip shared with the limit reservation).
With ``--merchants N`` (0 to skip; needs ``--merchant-rules``) N merchants, each with its own compiled set,
are decided through the process's own pair cache (``app.services.rules_runtime.pair_for``, at most
``PAYROUTER_RULES_PAIRED_SETS`` pairs, built in the background), in round robin and in a seeded random
order, beside the same decisions with each set matched apart; the pairs built while measuring are counted.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.domain.kinds import OperationKind  # noqa: E402
from app.entrypoints.tuning import tune_gc_for_serving  # noqa: E402
from rules.decide import MerchantRules, Paired, decide, facts_for, paired  # noqa: E402
from rules.engine import CompiledRules  # noqa: E402
from rules.facts import flatten  # noqa: E402
from rules.format import load  # noqa: E402
from rules.reference import ReferenceRules  # noqa: E402

TYPES = list(OperationKind.routed())
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CNY", "BRL", "INR", "AUD", "CAD", "CHF"]
COUNTRIES = ["US", "FR", "DE", "GB", "CN", "BR", "IN", "JP", "NG", "KP", "IR", "ES", "IT", "MX"]
METHODS = ["card", "wallet", "bank_transfer"]
CHANNELS = ["sandbox", "acq_alpha", "acq_beta"]


def make_rules(n: int, seed: int = 7) -> dict:
    rnd = random.Random(seed)
    rules = []
    for i in range(n):
        cond = [{"fact": "type", "eq": rnd.choice(TYPES)}, {"fact": "currency", "eq": rnd.choice(CURRENCIES)}]
        if rnd.random() < 0.6:
            cond.append({"fact": "payment_method.type", "eq": rnd.choice(METHODS)})
        if rnd.random() < 0.5:
            cond.append({"fact": "amount", "gte": rnd.randrange(0, 500_000, 100)})
        if rnd.random() < 0.3:
            cond.append({"fact": "customer.country", "in": rnd.sample(COUNTRIES, 2)})
        if rnd.random() < 0.15:
            cond.append({"not": {"fact": "metadata.segment", "eq": "vip"}})
        if rnd.random() < 0.1:
            cond.append({"fact": "hour", "lt": rnd.randrange(1, 24)})
        r = rnd.random()
        if r < 0.05:
            then = {"decline": "blocked"}
        elif r < 0.5:
            then = {"route": rnd.sample(CHANNELS, 2), "fee": {"percent": f"{rnd.randrange(10, 40) / 10}", "fixed": 30}}
        elif r < 0.7:
            then = {"split": {"acq_alpha": 70, "acq_beta": 30}}
        else:
            then = {"fee": {"percent": "1.9", "fixed": 10, "min": 20},
                    "limits": {"max_amount": rnd.randrange(10**6, 10**7),
                               "daily_count": {"per": "customer", "max": 50}}}
        rules.append({"id": f"rule-{i}", "priority": rnd.randrange(0, 1000), "when": {"all": cond}, "then": then})
    return {"rules": rules, "defaults": {"route": ["sandbox"], "fee": {"percent": "3.0", "fixed": 0}}}


def make_requests(n: int, seed: int = 11) -> list[dict]:
    rnd = random.Random(seed)
    return [facts_for(rnd.choice(TYPES), rnd.randrange(100, 1_000_000), rnd.choice(CURRENCIES),
                      {"type": rnd.choice(METHODS), "brand": "visa"},
                      {"id": f"cus_{rnd.randrange(1000)}", "country": rnd.choice(COUNTRIES)}, "mer_1", "retail",
                      {"segment": rnd.choice(["vip", "std"])} if rnd.random() < 0.5 else {}) for _ in range(n)]


EVIL_PATTERNS = ("^(a+)+$", "(x+x+)+y")


def evil_inputs(size: int) -> tuple[str, str]:
    return "a" * (size - 1) + "!", "x" * size


def make_adversarial(n: int, requests: list[dict], size: int = 10_240) -> tuple[dict, list[dict]]:
    """The generated set of ``n`` rules plus backtracking-prone patterns; requests with ``size``-byte e-mails."""
    data = make_rules(n)
    data["rules"].append({"id": "evil-decline", "priority": 2000, "then": {"decline": "suspicious_email"},
                          "when": {"fact": "customer.email", "matches": EVIL_PATTERNS[0]}})
    data["rules"].append({"id": "evil-route", "priority": 1500, "then": {"route": ["acq_beta"]},
                          "when": {"all": [{"fact": "type", "eq": "payment"},
                                           {"fact": "customer.email", "matches": EVIL_PATTERNS[1]}]}})
    inputs = evil_inputs(size)
    evil = [{**f, "customer": {**f["customer"], "email": inputs[i % 2]}} for i, f in enumerate(requests)]
    return data, evil


def make_merchant_rules(n: int, strategy: bool = False) -> dict:
    """A merchant's own set: generated rules of another seed, without fees (only the platform's set has them);
    with ``strategy`` its routes are ``success_rate`` routes and it has a ``success_rate`` default route."""
    data = make_rules(n, seed=23)
    for rule in data["rules"]:
        rule["then"].pop("fee", None)
        if not rule["then"]:
            rule["then"] = {"limits": {"max_amount": 5_000_000}}
        if strategy and "route" in rule["then"]:
            rule["then"]["route"] = {"strategy": "success_rate", "channels": rule["then"]["route"]}
    if strategy:
        return {"rules": data["rules"], "defaults": {"route": {"strategy": "success_rate", "channels": CHANNELS}}}
    return {"rules": data["rules"]}


class AllUp:
    def drop_reason(self, channel_id, *, operation, currency, method):
        return None


class Counted(AllUp):
    """Every channel up, with fixed success-rate counts (what the one Redis read of a payment returns)."""

    rng = random.Random(5)
    counts = {"sandbox": (40, 50), "acq_alpha": (90, 100), "acq_beta": (70, 100)}

    def costs(self, channels):
        return {}

    def outcomes(self, channels, *, window_minutes, operation, currency, method):
        return self.counts


def latencies(ruleset, matcher, reqs, merchant=None, pair=None, avail=None) -> list[float]:
    out = []
    avail = avail or AllUp()
    clock = time.perf_counter_ns
    for i, f in enumerate(reqs):
        t0 = clock()
        decide(f, ruleset, matcher, avail, split_key=str(i), merchant=merchant, pair=pair)
        out.append((clock() - t0) / 1000)
    return out


def throughput(ruleset, matcher, reqs, threads: int) -> float:
    per = len(reqs) // threads
    avail = AllUp()

    def work(k: int) -> None:
        for i, f in enumerate(reqs[k * per:(k + 1) * per]):
            decide(f, ruleset, matcher, avail, split_key=str(i))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return per * threads / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--adversarial", default="100,1000", help="generated rules in the adversarial case (0: skip)")
    ap.add_argument("--adversarial-bytes", type=int, default=10_240, help="length of the adversarial e-mails")
    ap.add_argument("--merchant-rules", type=int, default=20, help="rules in a merchant's own set (0: skip)")
    ap.add_argument("--merchants", type=int, default=0,
                    help="merchants decided through the process's pair cache, round robin and random (0: skip)")
    args = ap.parse_args()
    reqs = make_requests(args.requests)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.requests} requests per cell\n")
    print("| rules | engine rules | evaluator | p50 µs | p99 µs | decisions/s (1 thread) | decisions/s (4 threads) "
          "| engine fallbacks |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in (int(s) for s in args.sizes.split(",")):
        ruleset = load(make_rules(size))
        engine = CompiledRules(ruleset, version=size)
        tune_gc_for_serving()  # as `payrouter serve` and `payrouter worker` do (app/entrypoints/tuning.py)
        for name, matcher in (("engine", engine), ("reference", ReferenceRules(ruleset))):
            latencies(ruleset, matcher, reqs[:2000])  # warm up
            lat = latencies(ruleset, matcher, reqs)
            one = throughput(ruleset, matcher, reqs, 1)
            four = throughput(ruleset, matcher, reqs, 4)
            fb = engine.fallbacks if name == "engine" else "-"
            print(f"| {size} | {len(engine.plan.chains)} | {name} | {pct(lat, 50):.1f} | {pct(lat, 99):.1f} "
                  f"| {one:,.0f} | {four:,.0f} | {fb} |")
        if args.merchant_rules:
            own_set = load(make_merchant_rules(args.merchant_rules))
            own = MerchantRules("mer_1", own_set, CompiledRules(own_set, version=1), 1)
            pair = Paired(engine, own, CompiledRules(paired(ruleset, own), version=size))  # as a serving process
            for label, with_pair in (("engine, both sets as one", pair), ("engine, each set apart", None)):
                latencies(ruleset, engine, reqs[:2000], own, with_pair)
                lat = latencies(ruleset, engine, reqs, own, with_pair)
                chains = len(pair.matcher.plan.chains) if with_pair else \
                    f"{len(engine.plan.chains)} + {len(own.matcher.plan.chains)}"
                fallbacks = engine.fallbacks + own.matcher.fallbacks + pair.matcher.fallbacks
                print(f"| {size} + {args.merchant_rules} merchant's | {chains} | {label} | {pct(lat, 50):.1f} "
                      f"| {pct(lat, 99):.1f} | - | - | {fallbacks} |")
            own.matcher.close()
            pair.matcher.close()
            # the merchant routes by success_rate: the whole decision, the counts given (the Redis read is
            # one round trip shared with the limit reservation, app.services.routing.complete)
            own_set = load(make_merchant_rules(args.merchant_rules, strategy=True))
            own = MerchantRules("mer_1", own_set, CompiledRules(own_set, version=2), 2)
            pair = Paired(engine, own, CompiledRules(paired(ruleset, own), version=size))
            latencies(ruleset, engine, reqs[:2000], own, pair, Counted())
            lat = latencies(ruleset, engine, reqs, own, pair, Counted())
            print(f"| {size} + {args.merchant_rules} merchant's, success_rate routes | {len(pair.matcher.plan.chains)} "
                  f"| engine, both sets as one | {pct(lat, 50):.1f} | {pct(lat, 99):.1f} | - | - "
                  f"| {engine.fallbacks + pair.matcher.fallbacks} |")
            own.matcher.close()
            pair.matcher.close()
            if args.merchants:
                many_merchants(ruleset, engine, reqs, args.merchants, args.merchant_rules)
        engine.close()
    for size in (int(s) for s in args.adversarial.split(",")):
        if size:
            adversarial(size, reqs, args.adversarial_bytes)


def many_merchants(ruleset, engine, reqs, count: int, rules: int) -> None:
    """``count`` merchants with their own sets decided through the process's pair cache, as a serving process
    decides them (rules_runtime.pair_for), round robin then in a seeded random order; beside them, each set
    matched apart. The pairs compiled while measuring are counted (the builder's, or the decisions' own)."""
    from app.adapters import metrics
    from app.config import get_config
    from app.services import rules_runtime as runtime

    own_set = load(make_merchant_rules(rules))
    owns = [MerchantRules(f"mer_{i}", own_set, CompiledRules(own_set, version=1), 1) for i in range(count)]
    runtime.reset()
    runtime._slot.swap(engine)  # the process's live platform set and merchants' sets: these ones
    for own in owns:
        runtime._merchants[own.merchant] = runtime._Own(1, own, time.monotonic(), 0)
    settle = getattr(runtime, "settle", lambda: True)
    builds = getattr(metrics, "RULES_PAIR_BUILDS", None)
    compiled = []
    real = runtime.CompiledRules

    def counting(ruleset_, *args, **kwargs):
        compiled.append(1)
        return real(ruleset_, *args, **kwargs)

    runtime.CompiledRules = counting
    avail, clock = AllUp(), time.perf_counter_ns
    orders = {"round robin": [owns[i % count] for i in range(len(reqs))],
              "random order": [rng.choice(owns) for rng in [random.Random(3)] for _ in range(len(reqs))]}
    slots = get_config().rules_paired_sets
    try:
        for order, who in orders.items():
            for paired_ in (True, False):
                for i, f in enumerate(reqs[:4000]):  # warm up: the pairs this order earns are built
                    own = who[i]
                    pair = runtime.pair_for(own, engine) if paired_ else None
                    decide(f, ruleset, engine, avail, split_key=str(i), merchant=own, pair=pair)
                settle()
                before, lat = len(compiled), []
                for i, f in enumerate(reqs):
                    own = who[i]
                    t0 = clock()
                    pair = runtime.pair_for(own, engine) if paired_ else None
                    decide(f, ruleset, engine, avail, split_key=str(i), merchant=own, pair=pair)
                    lat.append((clock() - t0) / 1000)
                settle()
                label = f"through the pair cache ({slots} slots)" if paired_ else "each set apart"
                print(f"| {count} merchants' {rules} rules, {order} | - | engine, {label} | {pct(lat, 50):.1f} "
                      f"| {pct(lat, 99):.1f} | pairs compiled while measuring: {len(compiled) - before} | - | "
                      f"{engine.fallbacks} |")
    finally:
        runtime.CompiledRules = real
        runtime.reset()  # closes the pairs and the sets installed (the engine too: closing is idempotent)
        for own in owns:
            own.matcher.close()
    if builds is not None:
        print(f"\n(payrouter_rules_pair_builds_total in this process: {builds._value.get():.0f})\n")


def adversarial(size: int, reqs: list[dict], length: int) -> None:
    data, evil = make_adversarial(size, reqs, length)
    ruleset = load(data)
    engine = CompiledRules(ruleset, version=size)
    tune_gc_for_serving()
    print(f"\nAdversarial: {size} generated rules + `matches` {' and '.join(f'`{p}`' for p in EVIL_PATTERNS)}; "
          f"customer.email {length:,} bytes (`aaaa…!` / `xxxx…`, half and half)\n")
    print("| rules | evaluator | p50 µs | p99 µs | max µs | decisions/s (1 thread) | engine fallbacks |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    reference = ReferenceRules(ruleset)
    for f in evil[:200] + [{**evil[0], "customer": {"email": "a" * length}}]:  # both answer the same
        flat = flatten(f)
        assert engine.match(flat) == reference.match(flat), flat.get("customer.email", "")[-20:]
    for name, matcher in (("engine", engine), ("reference", reference)):
        latencies(ruleset, matcher, evil[:2000])  # warm up
        lat = latencies(ruleset, matcher, evil)
        one = throughput(ruleset, matcher, evil, 1)
        fb = engine.fallbacks if name == "engine" else "-"
        print(f"| {len(ruleset.rules)} | {name} | {pct(lat, 50):.1f} | {pct(lat, 99):.1f} | {max(lat):.0f} "
              f"| {one:,.0f} | {fb} |")
    engine.close()


if __name__ == "__main__":
    main()
