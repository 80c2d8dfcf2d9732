"""The example plugin (examples/channel-echo) installed as a third party installs it: a plain
`pip install` of the router and of the plugin into a fresh venv (no editable install, nothing of this
run's environment), then the plugin's own tests, the plugin kit against its adapter, run there from
a copy of the plugin outside the source tree; and the router finds the adapter by its entry point."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.live import IGNORED, ROOT, fresh_venv, source_copy

PLUGIN = ROOT / "examples" / "channel-echo"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")),
                       reason="runs on the embedded defaults only (the plugin's tests use no database)"),
]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("plugin") / "channel-echo"
    shutil.copytree(PLUGIN, target, ignore=IGNORED)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory, plugin) -> Path:
    router = source_copy(tmp_path_factory.mktemp("router-src"))
    return fresh_venv(tmp_path_factory.mktemp("plugin-venv"), str(router), f"{plugin}[test]")


def _run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{installed / 'bin'}:/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run([str(installed / "bin" / "python"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_installed_plugin_passes_the_kit(installed, plugin):
    done = _run(installed, plugin, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and " failed" not in done.stdout, done.stdout[-3000:]


def test_the_router_resolves_the_installed_adapter_by_its_entry_point(installed, tmp_path):
    probe = ("from channels.registry import resolve_adapter; import payrouter_channel_echo as p; "
             "print(resolve_adapter('echo').__qualname__, p.__file__)")
    done = _run(installed, tmp_path, "-c", probe)
    assert done.returncode == 0, done.stderr
    name, path = done.stdout.split()
    assert name == "EchoChannel" and Path(path).is_relative_to(installed), done.stdout
