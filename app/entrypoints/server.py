"""Production serving: gunicorn (threads, kept-alive connections), never a debug server."""
from __future__ import annotations

from typing import Callable

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict, load: Callable):
        self.options = options
        self._load = load
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._load()


def serve(load: Callable, host: str, port: int, *, workers: int, threads: int, preload: bool,
          post_fork: Callable | None = None, worker_exit: Callable | None = None, keepalive: int = 2) -> None:
    """Serve the WSGI app ``load()`` returns with gunicorn's threaded workers until stopped.
    ``preload``: build the app once in the master, before the fork (else in each worker).
    ``keepalive``: seconds an idle kept-alive connection is kept open."""
    options = {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "worker_class": "gthread",
               "timeout": 60, "graceful_timeout": 10, "accesslog": None, "preload_app": preload,
               "keepalive": keepalive,
               "control_socket_disable": True}  # no shared ~/.gunicorn socket between servers
    if post_fork is not None:
        options["post_fork"] = post_fork
    if worker_exit is not None:
        options["worker_exit"] = worker_exit
    from app.adapters.metrics_dir import worker_exited

    options["child_exit"] = worker_exited  # a dead worker's live gauges leave /metrics
    _Gunicorn(options, load).run()


def _load_api():
    from app.entrypoints.tuning import tune_gc_for_serving
    from app.entrypoints.web import create_app

    app = create_app()
    tune_gc_for_serving()  # in the master, before the fork: workers share the frozen pages
    return app


def _post_fork(_server, _worker):
    # Each worker process opens its own database and Redis connections.
    from app.adapters import db, redis_conn

    db.dispose_all()
    redis_conn.reset()
    import gc

    from app.entrypoints.tuning import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)
    from app.adapters import channel_builds

    channel_builds.start("api")  # this worker's channel build, reported (and kept current) for `channels import`


def _worker_exit(_server, _worker):
    from app.adapters import channel_builds

    channel_builds.stop()  # its build report withdrawn: `channels import` no longer waits for it


def run(host: str, port: int, workers: int = 2, threads: int = 8) -> None:
    serve(_load_api, host, port, workers=workers, threads=threads, preload=True, post_fork=_post_fork,
          worker_exit=_worker_exit)
