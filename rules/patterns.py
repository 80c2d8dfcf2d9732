"""``matches``: RE2 patterns, so matching is linear in the input whatever the pattern (contract §3).

Python's ``re`` backtracks: ``^(a+)+$`` against a long ``aaaa…!`` takes exponential time
and holds the GIL, so one rule froze every worker. RE2 (``google-re2``) never backtracks;
the price is that it has no backreferences and no lookaround. A pattern RE2 refuses is a
validation problem (``problem``), never a runtime surprise.

Every place a rule's pattern meets a value goes through ``search``: the reference
evaluator, the post-filter beside durable-rules (the engine's own ``$mt`` is never used)
and the compiler's satisfiability check. Patterns and values are run as UTF-8 bytes: a
value with a lone surrogate (valid JSON, not valid UTF-8) cannot make a decision raise.
Only whether there is a match is needed, so groups never capture (RE2 then answers from
its DFA alone).
"""
from __future__ import annotations

from functools import lru_cache

import re2

# Linear, but the constant grows with the compiled program: past this many instructions (large counts
# of Unicode classes, ``(?i)\pL{100}``) RE2's DFA runs out of room and one search over a long value
# costs more than the rest of a decision many times over (docs/benchmarks.md has the figures).
MAX_PROGRAM_SIZE = 20_000
# Size is not the whole cost: a DFA state holds every instruction the pattern may be at after the bytes
# read so far, and RE2 builds one per new byte. A chain of optional items (``(?:a?a?a?a?a?a?a?a?a?a?){600}``,
# 12,004 instructions, or ``(?:.?){300}``) makes each state thousands wide: its DFA outgrows its memory
# and starts over on every search, slow even on a short value, every time. Such a program shows a
# large fanout (instructions reachable from one without reading a byte); rules that need no such
# chain stay far below it (Unicode classes under (?i): at most 127).
MAX_FANOUT = 256

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is reported by ``problem``, not logged by the C++ side
_OPTIONS.never_capture = True


@lru_cache(maxsize=4096)
def compiled(pattern: str):
    """The compiled RE2 program of ``pattern``; raises ``re2.error`` or ``UnicodeEncodeError``."""
    return re2.compile(pattern.encode("utf-8"), _OPTIONS)


def problem(pattern: str) -> str | None:
    """Why RE2 cannot take ``pattern`` (``None`` when it can)."""
    try:
        compiled(pattern)
    except UnicodeEncodeError:
        return "it is not valid UTF-8 text (a lone surrogate escape)"
    except re2.error as exc:
        detail = exc.args[0] if exc.args else "refused"
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return (f"RE2 refuses it: {detail} (matches takes RE2 syntax: no backreferences or lookaround, "
                "which is what keeps matching linear-time)")
    size = compiled(pattern).programsize
    if size > MAX_PROGRAM_SIZE:
        return (f"it is too complex: {size:,} RE2 instructions (limit {MAX_PROGRAM_SIZE:,}); large repeat counts "
                "of Unicode classes such as \\pL or [\\p{L}\\p{N}], or under (?i), are the usual cause")
    if len(compiled(pattern).programfanout) > MAX_FANOUT.bit_length() - 1:  # histogram buckets: powers of 2
        return (f"it is too branchy to match fast: one step fans out to {MAX_FANOUT} or more alternatives (a long run "
                "of optional items such as (?:a?){300} or (?:.?){200}; write the repetition as one bounded class, "
                "e.g. a{0,300})")
    return None


def search(pattern: str, text: str) -> bool:
    """``pattern`` found anywhere in ``text`` (``re.search`` semantics, RE2 syntax); linear time."""
    return compiled(pattern).search(text.encode("utf-8", "surrogatepass")) is not None
