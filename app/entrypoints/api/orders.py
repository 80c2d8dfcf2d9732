"""/v1/orders: the merchant's sale, to which payments and refunds attach with ``order``."""
from flask import Blueprint, g

from app.entrypoints.api.common import create, listing, read
from app.entrypoints.api.openapi import ListOf, documented
from app.services import orders

bp = Blueprint("orders", __name__)
ORDERS = ListOf("order", orders.LIST_FILTERS, orders.STATUSES)


@bp.post("/v1/orders")
@documented("Create an order", body="order_create", answers="order", status=201)
def create_order():
    return create("order_create", lambda s, body: (201, orders.view(s, orders.create_order(s, g.merchant, body))))


@bp.get("/v1/orders")
@documented("List orders", answers=ORDERS)
def list_orders():
    def fetch(s, query):
        page = orders.list_orders(s, g.merchant, query)
        return orders.views(s, page.items), page.has_more

    return listing(fetch, "/v1/orders", ORDERS.filters, ORDERS.statuses)


@bp.get("/v1/orders/<order_id>")
@documented("Retrieve an order with its payments and refunds", answers="order")
def get_order(order_id):
    return read(lambda s: orders.view(s, orders.get_order(s, g.merchant, order_id)))
