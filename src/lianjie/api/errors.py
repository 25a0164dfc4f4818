"""Errors on the wire, Stripe-shaped: ``{"error": {"type", "code", "message", "param"}}``.

A domain outcome keeps its stable ``code``; the HTTP status and the error ``type`` follow from
the code. Anything unexpected is a 500 ``api_error`` with no detail, logged loudly.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from lianjie.errors import DomainError, ErrorCode, LianjieError

log = logging.getLogger("lianjie.api")
E = ErrorCode

_STATUS: dict[ErrorCode, int] = {
    E.MISSING_API_KEY: 401, E.INVALID_API_KEY: 401, E.FORBIDDEN: 403,
    E.NOT_YOUR_SUB_MERCHANT: 403,
    E.NOT_FOUND: 404, E.ORDER_NOT_FOUND: 404, E.PARTY_NOT_FOUND: 404,
    E.ACCOUNT_NOT_FOUND: 404, E.QR_CODE_NOT_FOUND: 404, E.WALLET_NOT_FOUND: 404,
    E.ENTRY_NOT_FOUND: 404, E.HOLD_NOT_FOUND: 404,
    E.IDEMPOTENCY_CONFLICT: 409, E.IDEMPOTENCY_IN_PROGRESS: 409,
    E.DUPLICATE_OUT_TRADE_NO: 409, E.DUPLICATE_OUT_REFUND_NO: 409,
    E.ORDER_ALREADY_PAID: 409, E.EXISTS_WITH_DIFFERENT_FIELDS: 409,
    E.INSUFFICIENT_FUNDS: 402,
    # marketing
    E.GROUP_NOT_FOUND: 404, E.RED_PACKET_NOT_FOUND: 404, E.CAMPAIGN_NOT_FOUND: 404,
    E.COUPON_NOT_FOUND: 404, E.SEGMENT_NOT_FOUND: 404, E.ALREADY_GRABBED: 409,
    E.RED_PACKET_EMPTY: 409, E.COUPON_ALREADY_USED: 409, E.CAMPAIGN_BUDGET_EXHAUSTED: 402,
    E.NOT_IN_GROUP: 403, E.NOT_ELIGIBLE: 403,
    # risk
    E.RISK_DECLINED: 402, E.RISK_REVIEW_PENDING: 409, E.RISK_CASE_NOT_FOUND: 404,
    E.RISK_CASE_CLAIMED: 409, E.RISK_CASE_CLOSED: 409, E.UNTRUSTED_CLIENT_CONTEXT: 403,
    # clearing
    E.BUSINESS_DAY_NOT_OVER: 409, E.DAY_ALREADY_SEALED: 409, E.NOT_LOGGED_YET: 409,
    E.DUPLICATE_FILE: 409, E.RECON_ITEM_NOT_FOUND: 404,
    # credit
    E.PRODUCT_NOT_FOUND: 404, E.APPLICATION_NOT_FOUND: 404, E.LOAN_NOT_FOUND: 404,
    E.APPLICATION_ALREADY_OPEN: 409, E.FUNDER_LIMIT_EXCEEDED: 409,
    E.OFFER_NOT_APPROVED: 409, E.OFFER_EXPIRED: 409, E.LOAN_NOT_ACTIVE: 409,
}
_TYPE: dict[int, str] = {401: "authentication_error", 403: "permission_error",
                         404: "invalid_request_error", 409: "invalid_request_error",
                         402: "payment_error", 400: "invalid_request_error",
                         405: "invalid_request_error"}


def status_for(code: ErrorCode) -> int:
    return _STATUS.get(code, 400)


def error_body(code: str, message: str, param: str | None, status: int) -> bytes:
    err_type = "idempotency_error" if code.startswith("idempotency") else \
        _TYPE.get(status, "api_error")
    return orjson.dumps({"error": {"type": err_type, "code": code, "message": message,
                                   "param": param}})


def error_response(code: str, message: str, param: str | None, status: int) -> Response:
    return Response(error_body(code, message, param, status), status_code=status,
                    media_type="application/json")


def _param(loc: tuple[Any, ...]) -> str | None:
    names = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(names) or None


def response_for(exc: Exception) -> Response:
    """The response for an exception a unit of work raised: what the handlers below answer,
    for the routes that run below FastAPI (``api.fastpath``). Logs as they do."""
    if isinstance(exc, DomainError):
        return error_response(exc.code.value, exc.message, exc.param, status_for(exc.code))
    if isinstance(exc, LianjieError):
        log.error("infrastructure error: %s", exc)
        return error_response("service_unavailable", "the service could not complete the "
                              "request; retry with the same Idempotency-Key", None, 503)
    log.exception("unexpected error", exc_info=exc)
    return error_response("internal_error", "an internal error occurred", None, 500)


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> Response:
        return response_for(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            return error_response(E.INVALID_JSON.value, "the body is not valid JSON", None, 400)
        param = _param(loc)
        code = E.INVALID_REQUEST
        if param and param.split(".")[-1] == "amount":
            code = E.INVALID_AMOUNT
        if param and param.split(".")[-1] == "currency":
            code = E.UNKNOWN_CURRENCY
        return error_response(code.value, f"{param or 'request'}: {first.get('msg')}", param,
                              400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else (
            "method_not_allowed" if exc.status_code == 405 else "invalid_request")
        return error_response(code, str(exc.detail), None, exc.status_code)

    @app.exception_handler(LianjieError)
    async def _infra(_request: Request, exc: LianjieError) -> Response:
        return response_for(exc)

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> Response:
        return response_for(exc)
