"""The configuration of the Flask app in use: attached by ``create_app``, read by request code with
``app_config()``, and answered by ``app.config.get_config`` wherever an app context is active (a
request, or code run in ``app.app_context()``), so services called from a request read their app's."""
from __future__ import annotations

from flask import Flask, current_app, has_app_context

from app.config import APP_EXTENSION, Config, read_active_app_with


def attach(app: Flask, config: Config) -> None:
    app.extensions[APP_EXTENSION] = config
    read_active_app_with(_active)


def app_config() -> Config:
    """The configuration of the app serving this request."""
    return current_app.extensions[APP_EXTENSION]


def _active() -> Config | None:
    return current_app.extensions.get(APP_EXTENSION) if has_app_context() else None
