"""Instructions per routing decision, counted by callgrind: stable whatever the machine's load.

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=map_next \\
        --callgrind-out-file=/tmp/decide.%p.out .venv/bin/python bench/rules_callgrind.py MODE [N]
    grep ^summary: /tmp/decide.*.out      # total instructions; divide by N (default 2000)

Only the N measured decisions are counted (they run inside one ``map``; set-up, compiling and a
warm-up of 500 decisions run outside it). The sets are bench/rules.py's: 100 generated platform rules
and a merchant's own 20. MODE:

- ``platform``: the platform's set alone;
- ``paired``: with the merchant's set, both compiled as one (one engine match: a serving process);
- ``apart``: with the merchant's set, each set matched on its own (two engine matches);
- ``success_rate``: the merchant's routes (and default route) are ``success_rate`` routes, outcome
  counts given (no Redis), both sets compiled as one where this tree can (``rules.decide.paired``).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.entrypoints.tuning import tune_gc_for_serving  # noqa: E402
from bench.rules import AllUp, Counted, make_merchant_rules, make_requests, make_rules  # noqa: E402
from rules import decide as decide_mod  # noqa: E402
from rules.engine import CompiledRules  # noqa: E402
from rules.format import load  # noqa: E402


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    requests = make_requests(n)
    platform_set = load(make_rules(100))
    platform = CompiledRules(platform_set, version=100)
    kw: dict = {}
    availability = AllUp()
    if mode != "platform":
        own_set = load(make_merchant_rules(20, strategy=mode == "success_rate"))
        own = decide_mod.MerchantRules("mer_1", own_set, CompiledRules(own_set, version=1), 1)
        kw["merchant"] = own
        if mode in ("paired", "success_rate") and hasattr(decide_mod, "paired"):
            both = CompiledRules(decide_mod.paired(platform_set, own), version=100)
            kw["pair"] = decide_mod.Paired(platform, own, both)
        elif mode == "paired":
            sys.exit("this tree cannot compile both sets as one (no rules.decide.paired)")
        if mode == "success_rate":
            availability = Counted()

    def one(facts: dict):
        return decide_mod.decide(facts, platform_set, platform, availability, split_key="k", **kw)

    tune_gc_for_serving()
    for facts in requests[:500]:
        one(facts)
    list(map(one, requests))  # counted: --toggle-collect=map_next


if __name__ == "__main__":
    main()
