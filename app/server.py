"""Production serving: gunicorn (threads, several processes), never the Flask debug server."""
from __future__ import annotations

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from app.tuning import tune_gc_for_serving
        from app.web import create_app

        app = create_app()
        tune_gc_for_serving()  # in the master, before the fork: workers share the frozen pages
        return app


def _post_fork(_server, _worker):
    # Each worker process opens its own database and Redis connections.
    from app import db, redis_conn

    db.dispose_all()
    redis_conn.reset()
    import gc

    from app.tuning import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)


def run(host: str, port: int, workers: int = 2, threads: int = 8) -> None:
    _Gunicorn({
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": None,
        "post_fork": _post_fork,
        "preload_app": True,
    }).run()
