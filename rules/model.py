"""The parsed form of a rule file: frozen dataclasses, no engine, no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, Union

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "matches", "exists")
ORDERING = frozenset({"gt", "gte", "lt", "lte"})


@dataclass(frozen=True, slots=True)
class Atom:
    """``{fact: path, <op>: value}``. ``not_matches`` exists only after negation (never in files)."""

    fact: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class All:
    items: tuple["Condition", ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple["Condition", ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: "Condition"


Condition = Union[Atom, All, AnyOf, Not]


@dataclass(frozen=True, slots=True)
class Fee:
    """``percent`` (exact Decimal) of the amount plus ``fixed``, bounded by ``min``/``max`` (minor units)."""

    percent: Decimal = Decimal(0)
    fixed: int = 0
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class Daily:
    per: str  # "customer" | "merchant"
    max: int


@dataclass(frozen=True, slots=True)
class Limits:
    max_amount: int | None = None
    min_amount: int | None = None
    daily_amount: Daily | None = None
    daily_count: Daily | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Decline codes on which the next candidate is tried (soft declines), at most ``max`` extra attempts."""

    on: tuple[str, ...]
    max: int = 1


STRATEGIES = ("priority", "cost", "success_rate")


@dataclass(frozen=True, slots=True)
class Strategy:
    """How a ``route`` orders its channels (contract §3): ``cost`` cheapest first for this amount,
    ``success_rate`` by the share of succeeded outcomes over the last ``window_minutes`` (a channel
    under ``min_samples`` outcomes scores as the average), ``exploration_percent`` of decisions in
    random order. ``priority`` (a plain list) is the listed order and needs no Strategy."""

    name: str
    window_minutes: int = 15
    min_samples: int = 20
    exploration_percent: int = 5

    def to_dict(self) -> dict:
        if self.name == "success_rate":
            return {"strategy": self.name, "window_minutes": self.window_minutes,
                    "min_samples": self.min_samples, "exploration_percent": self.exploration_percent}
        return {"strategy": self.name}


@dataclass(frozen=True, slots=True)
class Then:
    decline: str | None = None
    route: tuple[str, ...] | None = None
    split: tuple[tuple[str, int], ...] | None = None
    fee: Fee | None = None
    limits: Limits | None = None
    retry: Retry | None = None
    strategy: Strategy | None = None  # how ``route`` is ordered; None: the listed order (priority)

    def channels(self) -> tuple[str, ...]:
        return tuple(self.route or ()) + tuple(ch for ch, _ in self.split or ())


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    priority: int
    when: Condition
    then: Then
    index: int = 0  # position in the file
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RuleSet:
    """Rules in file order plus the defaults (``Then`` without decline or limits)."""

    rules: tuple[Rule, ...]
    defaults: Then = field(default_factory=Then)

    @cached_property
    def _by_id(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.rules}

    @cached_property
    def _order(self) -> tuple[int, ...]:
        return tuple(sorted(range(len(self.rules)), key=lambda i: (-self.rules[i].priority, i)))

    def by_id(self) -> dict[str, Rule]:
        """Rules by id (cached; do not mutate)."""
        return self._by_id

    def order(self) -> tuple[int, ...]:
        """Rule indexes by priority descending, ties by file order."""
        return self._order


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a rule file. ``path`` is slash-separated from the document root."""

    rule_id: str | None
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        rule = f"rule {self.rule_id!r} " if self.rule_id else ""
        return f"{where}{rule}at {self.path or '/'}: {self.message}"
