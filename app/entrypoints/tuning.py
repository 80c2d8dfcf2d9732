"""Process tuning for long-running servers and workers.

The generational GC's youngest-generation pass runs every 700 net allocations by default;
a routing decision allocates enough to trigger one every few dozen decisions, and those
passes are most of the p99 decision latency (docs/benchmarks.md has the figures).
Serving processes therefore freeze what they loaded at start-up (it never becomes garbage)
and collect the young generation less often; reference counting still frees almost
everything at once, the GC only has cycles left to find.
"""
from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc_for_serving() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
