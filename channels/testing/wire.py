"""The checks of what reaches the wire and what is kept secret, part of ``ChannelContract``
(channels.testing): a channel-supplied value, a merchant's value or a secret holding a line break
never adds a header or a request; a card token reaches the PSP and nothing else."""
from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from channels.base import ChannelError
from channels.testing.hosts import closed_url

INJECTIONS = ("ref\r\nX-Injected: 1", "ref\nX-Injected: 1", "ref\rX-Injected: 1",
              "ref\r\n\r\nGET /smuggled HTTP/1.1\r\nX-Injected: 1")


def new_key() -> str:
    return uuid.uuid4().hex


def new_ref(prefix: str) -> str:
    return f"{prefix}_kit{uuid.uuid4().hex[:16]}"


def fails(call: Callable[..., Any], *args) -> ChannelError | None:
    """Run one adapter call that may fail: a ChannelError is the router's to handle; anything else
    (a ValueError, a KeyError…) would be a 500 in the router, so it propagates and fails the test."""
    try:
        call(*args)
    except ChannelError as exc:
        return exc
    return None


def wire_problems(raw: bytes) -> list[str]:
    """What in one recorded request's head could only come from an injected line break."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    problems = [f"a bare CR or LF in {line[:60]!r}" for line in lines if b"\r" in line or b"\n" in line]
    problems += [f"an injected header {line[:60]!r}" for line in lines if line.lower().startswith(b"x-injected")]
    if len(lines[0].split(b" ")) != 3:
        problems.append(f"a request line that is not 'METHOD target HTTP/1.1': {lines[0][:80]!r}")
    return problems


class WireContract:
    """Mixed into ``ChannelContract``, whose fixtures (``channel``, ``wire``) and helpers it uses."""

    # ---- nothing reaches the wire that could change a request ------------------------------------

    def test_line_breaks_in_channel_supplied_values_never_reach_the_wire(self, wire):
        wired, calls, mark = self.make_channel(wire.url), 0, len(wire.requests)
        for value in INJECTIONS:
            for name, call in self.changes(wired, channel_reference=value).items():
                if name != "charge":
                    calls += 1
                    fails(call, new_key())
            calls += 2
            fails(wired.query, new_ref("pay"), value)
            fails(wired.query, value)
            calls += 1
            method = {**self.payment_method, "brand": value}
            fails(wired.charge, self.charge_request(self.amount("succeeded"), payment_method=method))
        sent = wire.since(mark)
        assert len(sent) <= calls, f"{len(sent)} requests reached the wire for {calls} calls: one was smuggled"
        for raw in sent:
            assert not wire_problems(raw), (wire_problems(raw), raw[:300])

    def test_a_secret_with_a_line_break_never_adds_a_header(self, wire):
        mark = len(wire.requests)
        for value in INJECTIONS:
            wired = self.make_channel(wire.url, secret=value)
            fails(wired.charge, self.charge_request(self.amount("succeeded")))
        for raw in wire.since(mark):
            assert not wire_problems(raw), (wire_problems(raw), raw[:300])

    # ---- secrets stay secret -------------------------------------------------------------------

    def test_a_card_token_reaches_the_psp_and_nothing_else(self, channel, wire):
        token = "tok_kit" + uuid.uuid4().hex
        request = self.charge_request(self.amount("succeeded"), token=token)
        assert token not in repr(request) and token not in repr(channel) and token not in str(channel)
        mark = len(wire.requests)
        refused = fails(self.make_channel(wire.url).charge, request)
        assert refused is not None and token not in str(refused) and token not in repr(refused)
        if self.takes_tokens:
            assert any(token.encode() in raw for raw in wire.since(mark)), "the token never reached the PSP"
        try:  # the PSP answers whatever it answers to a token it never issued: none of it may echo the token
            result = channel.charge(request)
        except ChannelError as exc:
            seen = f"{exc} {exc!r}"
        else:
            seen = repr(result) + json.dumps(result.raw, default=str)
        assert token not in seen

    def test_the_secret_is_never_in_a_repr_or_a_fault(self, channel):
        assert self.secret not in repr(channel) and self.secret not in str(channel)
        fault = fails(self.make_channel(closed_url()).charge, self.charge_request(self.amount("succeeded")))
        assert fault is not None and self.secret not in str(fault)

