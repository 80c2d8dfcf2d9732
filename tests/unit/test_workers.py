"""The suite's parallel workers each get a backend of their own (tests/workers.py)."""
import pytest

from tests import workers

RUN = {"PAYROUTER_VAR_DIR": "/tmp/run", "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/payrouter_ci",
       "REDIS_URL": "redis://127.0.0.1:6379/14"}


def test_each_worker_gets_its_own_var_dir_database_and_redis_database():
    first, second = workers.environment_for("gw0", RUN), workers.environment_for("gw1", RUN)
    assert first == {"PAYROUTER_VAR_DIR": "/tmp/run/gw0", "REDIS_URL": "redis://127.0.0.1:6379/14",
                     "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/payrouter_ci_gw0"}
    assert second == {"PAYROUTER_VAR_DIR": "/tmp/run/gw1", "REDIS_URL": "redis://127.0.0.1:6379/15",
                      "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/payrouter_ci_gw1"}


def test_the_embedded_backend_changes_only_the_var_dir():
    assert workers.environment_for("gw3", {"PAYROUTER_VAR_DIR": "/tmp/run"}) == {"PAYROUTER_VAR_DIR": "/tmp/run/gw3"}


def test_a_worker_past_the_servers_last_redis_database_is_refused_and_auto_never_starts_it():
    with pytest.raises(RuntimeError, match="Redis database 16"):
        workers.environment_for("gw2", RUN)
    assert workers.auto_workers(2, RUN) == 2  # databases 14 and 15
    assert workers.auto_workers(2, {"REDIS_URL": "redis://127.0.0.1:6379"}) == workers.WORKERS_WANTED  # from 0
    assert workers.auto_workers(8, {}) == 8


def test_a_group_runs_in_one_worker_and_every_other_test_alone():
    assert workers.scope("tests/e2e/test_console_auth.py::test_log_in_and_out[chromium]") == "tests/e2e/"
    assert workers.scope("tests/integration/test_fuzz.py::test_x[GET /v1/accounts][api]") == \
        "tests/integration/test_fuzz.py"
    assert workers.scope("tests/unit/test_money.py::test_rounding") == "tests/unit/test_money.py::test_rounding"


def test_node_ids_given_twice_are_found():
    assert workers.duplicate_ids(["a::t[1]", "a::t", "a::t[2]", "a::t"]) == ["a::t"]
    assert workers.duplicate_ids(["a::t[1]", "a::t[2]"]) == []
