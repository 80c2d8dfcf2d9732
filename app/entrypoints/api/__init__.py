"""HTTP API: one blueprint per resource. Each view parses, calls one service, serializes."""


def blueprints() -> list:
    """Every blueprint of the HTTP API, in the order the app registers them."""
    from app.entrypoints.api import (
        accounts,
        api_keys,
        balance,
        callbacks,
        channel_accounts,
        disputes,
        events,
        health,
        metrics,
        openapi,
        ops,
        orders,
        payments,
        reports,
        routing,
        transfers,
        webhooks,
    )

    return [module.bp for module in (health, openapi, accounts, transfers, payments, orders, disputes, routing,
                                     events, webhooks, api_keys, channel_accounts, balance, reports, callbacks, ops,
                                     metrics)]
