"""A plain `pip install .` (not editable) into a fresh venv, its dependencies resolved by pip from the
package index, then `payrouter init` and `payrouter demo` run from a directory outside the source tree
with only PAYROUTER_VAR_DIR set: what the README's quick start promises a newcomer.

The demo must answer /readyz and the console's login page, accept the secret key it printed, and on
SIGTERM stop everything it started (its API, worker, sandbox and embedded Redis).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.live import free_ports, fresh_venv, source_copy, wait_http

pytestmark = [
    pytest.mark.slow,
    # The install runs on the embedded defaults whatever the suite's database: once per CI run is enough.
    pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")),
                       reason="runs on the embedded defaults only (the PostgreSQL pass would repeat it unchanged)"),
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding a normal (non-editable) install of the project and of its dependencies."""
    src = source_copy(tmp_path_factory.mktemp("install-src"))
    return fresh_venv(tmp_path_factory.mktemp("install-venv"), str(src))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("install-workdir")


def _env(installed: Path, workdir: Path) -> dict[str, str]:
    """Only what a newcomer's shell has, plus the var dir: no DATABASE_URL, no REDIS_URL, no PYTHONPATH."""
    return {"PATH": f"{installed / 'bin'}:/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
            "PAYROUTER_VAR_DIR": str(workdir / "var")}


def _ours(installed: Path) -> list[psutil.Process]:
    """Live processes running from the test's venv (its path is unique to this test)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and str(installed) in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_the_install_is_not_editable_and_carries_everything(installed, workdir):
    probe = "import app, rules, channels, admin, schemas; print(app.__file__, rules.__file__, channels.__file__, " \
            "admin.__file__, *schemas.__path__)"
    done = subprocess.run([str(installed / "bin" / "python"), "-c", probe], cwd=workdir, env=_env(installed, workdir),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for path in done.stdout.split():
        assert Path(path).is_relative_to(installed), path
    (site,) = installed.glob("lib/python*/site-packages")
    assert not list(site.glob("__editable__*")) and not list(site.glob("*.egg-link"))
    for needed in ("schemas/api.schema.json", "schemas/rules.schema.json", "rules/default_rules.yaml",
                   "channels/channels.yaml", "app/adapters/migrations/env.py"):
        assert (site / needed).is_file(), needed


def test_init_then_demo_from_another_directory(installed, workdir):
    env, payrouter = _env(installed, workdir), str(installed / "bin" / "payrouter")
    done = subprocess.run([payrouter, "init"], cwd=workdir, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"rules_version": 1' in done.stdout and (workdir / "var").is_dir()

    port, sandbox_port = free_ports(2)
    out = workdir / "demo.out"
    with out.open("wb") as sink:
        demo = subprocess.Popen([payrouter, "demo", "--port", str(port), "--sandbox-port", str(sandbox_port)],
                                cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/readyz", timeout=120, proc=demo)
        assert "Log in" in requests.get(base + "/admin/login/", timeout=10).text
        deadline = time.monotonic() + 30
        while "Ctrl-C stops everything" not in out.read_text() and time.monotonic() < deadline:
            assert demo.poll() is None, out.read_text()[-3000:]
            time.sleep(0.2)
        text = out.read_text()
        key = re.search(r"secret key (\S+)", text).group(1)
        bob = re.search(r"(\S+) \(bob, empty\)", text).group(1)
        answer = requests.get(f"{base}/v1/accounts/{bob}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["id"] == bob
        started = _ours(installed)
        assert len(started) >= 4, [p.info["cmdline"] for p in started]  # demo, API, worker, sandbox (+ Redis)

        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0, out.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while _ours(installed) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p.info["cmdline"] for p in _ours(installed)] == []
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for proc in _ours(installed):  # only what this test's venv runs
            proc.kill()
