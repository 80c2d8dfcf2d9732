"""Who holds the configuration (docs/design.md "Configuration"): the active app's is what a request
and the services it calls read, else the one a scope gave the thread, else the process's."""
from __future__ import annotations

import threading

from flask import Flask

from app.adapters.jobs import Periodic
from app.config import Config, get_config, scoped
from app.entrypoints import app_config


def _app(config: Config | None) -> Flask:
    app = Flask(__name__)
    if config is not None:
        app_config.attach(app, config)
    return app


def test_the_active_app_then_a_scope_then_the_process():
    process = get_config()
    mine, scope = Config.from_env().with_(rate_limit=1), Config.from_env().with_(rate_limit=2)
    app = _app(mine)
    with scoped(scope):
        assert get_config() is scope
        with app.app_context():
            assert get_config() is mine and app_config.app_config() is mine
            with scoped(process):
                assert get_config() is mine  # a request reads its app's, whatever scope its thread has
            with _app(None).app_context():
                assert get_config() is scope  # an app that holds none answers nothing
        with app.test_request_context("/"):
            assert get_config() is mine
        assert get_config() is scope
    assert get_config() is process  # left as it was


def test_two_apps_each_answer_their_own_in_the_same_thread():
    one, two = Config.from_env().with_(ops_token="one"), Config.from_env().with_(ops_token="two")
    first, second = _app(one), _app(two)
    with first.app_context():
        with second.app_context():
            assert get_config().ops_token == "two"
        assert get_config().ops_token == "one"


def test_a_thread_starts_without_its_makers_scope_but_a_periodic_task_keeps_it():
    process, scope = get_config(), Config.from_env().with_(rate_limit=3)
    seen: dict[str, Config] = {}
    with scoped(scope):
        thread = threading.Thread(target=lambda: seen.setdefault("thread", get_config()))
        thread.start()
        thread.join(5)

        def task():
            seen.setdefault("periodic", get_config())
            periodic.stopped.set()

        periodic = Periodic("config-probe", task, interval=0.01)
    periodic.start()
    periodic.join(5)
    assert seen == {"thread": process, "periodic": scope}
