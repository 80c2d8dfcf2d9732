"""/v1/reports/settlement: a day's settlement per currency and channel, as CSV."""
from flask import Blueprint, Response, g, request

from app.adapters.db import unit_of_work
from app.entrypoints.api.openapi import Csv, documented
from app.services import reports
from app.services.validation import query_params

bp = Blueprint("reports", __name__)

DATE = {"name": "date", "in": "query", "required": True, "description": "The UTC day, YYYY-MM-DD",
        "schema": {"type": "string", "format": "date"}}


@bp.get("/v1/reports/settlement")
@documented("A day's settlement per currency and channel (CSV)", answers=Csv(reports.COLUMNS), parameters=[DATE])
def settlement_report():
    query_params(request.args, {"date"})
    day = reports.parse_day(request.args.get("date"))
    with unit_of_work() as session:
        rows = reports.settlement(session, day, g.merchant.id, g.merchant.livemode)
    response = Response(reports.to_csv(rows, with_merchant=False), status=200, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="settlement-{day.isoformat()}.csv"'
    return response
