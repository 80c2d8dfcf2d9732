"""The Flask application factory."""
from __future__ import annotations

import logging
import time

from flask import Flask, g, request

from app import context
from app.adapters import logs, metrics, ratelimit
from app.config import Config, get_config
from app.entrypoints import app_config
from app.entrypoints.api import errors
from app.entrypoints.api.common import authenticate_request
from app.services import validation

log = logging.getLogger("payrouter.http")


def create_app(config: Config | None = None) -> Flask:
    """An app holding ``config`` (by default the process's): its requests, and the services they
    call, read it (app.entrypoints.app_config); the process's configuration is left as it is."""
    config = config or get_config()
    logs.setup(config.log_json)
    app = Flask(__name__)
    app_config.attach(app, config)
    from app.adapters import channels_runtime

    with app.app_context():
        channels_runtime.prepare()  # a live channel without its secret from the environment: refuse to start
    from app.adapters import crypto

    # Signs console sessions: PAYROUTER_SECRET_KEY, or without it this install's random var/secret_key.
    app.config["SECRET_KEY"] = crypto.current_key(config)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.json.sort_keys = False
    errors.register(app)
    _context_hooks(app)

    from app.entrypoints.api import blueprints

    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    from admin import init_admin

    init_admin(app)  # the console at /admin: its own log-in (not the /v1 keys), CSRF on its forms
    return app


def _context_hooks(app: Flask) -> None:
    @app.before_request
    def _bind_context():
        incoming = request.headers.get(context.REQUEST_ID_HEADER)
        rid = incoming if context.valid_request_id(incoming) else context.new_request_id()
        g.context_tokens = (context.request_id_var.set(rid), context.merchant_id_var.set(None),
                            context.object_id_var.set(None))
        g.started = time.perf_counter()
        if request.path.startswith("/v1/"):  # merchant API; /callbacks and /ops authenticate on their own
            authenticate_request()
            ratelimit.check(g.api_key.id)  # per key (CONTRACT §1): one Redis round trip, or this process's memory
        # Every route's path and query, as parse_json does every body: bad text is a 400, never a 5xx.
        validation.screen(validation.raw_path(request.environ), request.query_string, request.view_args)

    @app.after_request
    def _echo(response):
        response.headers[context.REQUEST_ID_HEADER] = context.current_request_id() or ""
        started = g.get("started")
        if started:  # counters in memory only (app.adapters.metrics): nothing on the request path waits for them
            rule = request.url_rule
            metrics.observe_request(request.method, rule.rule if rule is not None else None, response.status_code,
                                    time.perf_counter() - started)
        log.info("%s %s %s", request.method, request.path, response.status_code, extra={
            "method": request.method, "path": request.path, "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None})
        return response

    @app.teardown_request
    def _unbind(_exc):
        tokens = g.pop("context_tokens", None)
        if tokens:
            context_vars = (context.request_id_var, context.merchant_id_var, context.object_id_var)
            for var, token in zip(context_vars, tokens, strict=True):
                var.reset(token)
