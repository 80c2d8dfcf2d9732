"""Where the API's CPU goes under load: py-spy samples one gunicorn worker while wrk drives payments.

    cd bench && DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_bench REDIS_URL=redis://127.0.0.1:6379/9 \
        ../.venv/bin/python profile_api.py [--duration 30] [--path /v1/payments] [--out /tmp/payrouter.folded]

One API process (gunicorn gthread, 1 worker × 8 threads) pinned to API_CPUS, the sandbox PSP and wrk
on OTHER_CPUS, as in fixed_reference.py. py-spy (`pip install py-spy`; it reads the process from
outside, so the worker runs unchanged) records the worker's stacks at 250 Hz, only the thread
holding the GIL (Python's CPU, not its waits).
Prints each library's share of the samples by the frame that was running (self time), and the
inclusive share of the frames of our own code that matter most; the folded stacks are kept in
``--out`` for a flame graph (e.g. speedscope).
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import uuid

import psutil
from common import postgres_bench, setup_merchant, start, stop
from fixed_reference import API_CPUS, OTHER_CPUS, PAYMENT_BODY, pinned, wrk

# A frame's file (as py-spy prints it: relative to its sys.path entry) → who wrote the code that ran.
OURS = {"app": "payrouter app/", "rules": "payrouter rules/", "channels": "payrouter channels/",
        "schemas": "payrouter schemas/"}
LIBRARIES = {"sqlalchemy": "SQLAlchemy", "psycopg": "psycopg", "psycopg_binary": "psycopg", "jsonschema": "jsonschema",
             "referencing": "jsonschema", "rpds": "jsonschema", "flask": "Flask/Werkzeug", "werkzeug": "Flask/Werkzeug",
             "gunicorn": "gunicorn", "urllib3": "urllib3", "redis": "redis-py", "durable": "durable-rules",
             "prometheus_client": "prometheus-client", "json": "json (stdlib)", "logging": "logging (stdlib)"}


def _path(frame: str) -> str:
    return frame[frame.rfind("(") + 1:].rsplit(":", 1)[0]


def owner(frame: str) -> str:
    first = _path(frame).split("/")[0]
    if first in OURS:
        return OURS[first]
    if first in LIBRARIES:
        return LIBRARIES[first]
    return "generated (dataclasses, …)" if first.startswith("<") else "stdlib and other"


def summarize(folded: str, top: int = 25) -> None:
    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in open(folded):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n, frames = int(count), stack.split(";")
        total += n
        own[owner(frames[-1])] += n
        for frame in set(frames):
            if _path(frame).split("/")[0] in OURS:
                inclusive[f"{frame.split(' (')[0]} ({_path(frame)})"] += n
    print(f"{total} samples\n\n| code | self share |\n| --- | --- |")
    for name, n in own.most_common():
        print(f"| {name} | {100 * n / total:.1f} % |")
    print("\n| our function (inclusive) | share |\n| --- | --- |")
    for name, n in inclusive.most_common(top):
        print(f"| `{name}` | {100 * n / total:.1f} % |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--path", default="/v1/payments")
    parser.add_argument("--out", default="/tmp/payrouter.folded")
    parser.add_argument("--summarize", metavar="FOLDED", help="only summarize stacks recorded before")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return 0
    bench = postgres_bench()
    if bench is None:
        return 2
    sandbox_port, env = bench.sandbox_port, bench.env
    secret, _ids = setup_merchant(2)
    servers = []
    try:
        servers.append(start(pinned(OTHER_CPUS, [sys.executable, "-m", "app", "sandbox", "--port", "{port}"]), env,
                             "/healthz", port=sandbox_port))
        api, base = start(pinned(API_CPUS, [sys.executable, "-m", "app", "serve", "--port", "{port}", "--workers", "1",
                                            "--threads", "8"]), env, "/readyz")
        servers.append((api, base))
        wrk(base, args.path, PAYMENT_BODY, secret, 3, 16, f"warm-{uuid.uuid4().hex[:8]}")
        worker = psutil.Process(api.pid).children()[0].pid
        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid",
                                str(worker), "--rate", "250", "--format", "raw", "--gil", "--output", args.out,
                                "--duration", str(args.duration), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = wrk(base, args.path, PAYMENT_BODY, secret, args.duration, 16, uuid.uuid4().hex[:12])
        spy.wait(timeout=args.duration + 60)
    finally:
        for proc, _base in servers:
            stop(proc)
    print(f"wrk: {result}\n")
    summarize(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
