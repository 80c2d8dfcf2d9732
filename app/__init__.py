"""PayRouter: the Flask application factory lives in app.entrypoints.web (create_app)."""


def create_app(config=None):
    from app.entrypoints.web import create_app as _create

    return _create(config)
