"""PayRouter: the Flask application factory lives in app.web (create_app)."""


def create_app(config=None):
    from app.web import create_app as _create

    return _create(config)
