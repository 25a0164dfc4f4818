"""Who may see and do what. One place, so every route asks the same questions.

- An operator key may act on anything.
- A merchant key acts for its own merchant only; naming another merchant is refused.
- A service provider key acts for its own sub-merchants only (``not_your_sub_merchant``).
- A consumer key pays orders and uses its own wallet; it may look at an open order (to pay it)
  and at orders it paid. Paying needs only the order's id, which its QR code carries: an order
  that is no longer open answers why (``order_already_paid``, ``order_closed``,
  ``order_expired``), so the consumer who lost a race to pay learns that it was paid.
- Objects a caller may not see answer "not found", so ids of others' objects leak nothing.
- The end client's IP and device (for the risk engine) are taken from a service provider or
  institution key in the ``Lianjie-Client-Ip`` / ``Lianjie-Device-Id`` headers; from other
  keys those headers are refused (``untrusted_client_context``): see ``client_context``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection
from starlette.requests import Request

from lianjie.api.keys import Principal, Role
from lianjie.errors import DomainError, ErrorCode
from lianjie.payments import Order, Party, PartyKind, get_order, require_party


def acting_merchant(conn: Connection, p: Principal, merchant_id: str | None,
                    known: Mapping[str, Party] | None = None) -> Party:
    """The merchant a request acts for, after checking the caller may act for it. ``known``:
    parties read in this transaction already (``acting_merchant_id`` names the one to read
    for each of many requests); a party not among them is read."""
    if p.role == Role.MERCHANT:
        if merchant_id not in (None, p.party_id):
            raise DomainError(ErrorCode.FORBIDDEN, "a merchant key acts for its own merchant",
                              "merchant_id")
        return _merchant(conn, p.party_id, known, "id")
    if p.role not in (Role.SERVICE_PROVIDER, Role.OPERATOR):
        raise DomainError(ErrorCode.FORBIDDEN, "this key cannot act for a merchant")
    if merchant_id is None:
        raise DomainError(ErrorCode.INVALID_REQUEST, "merchant_id is required", "merchant_id")
    merchant = _merchant(conn, merchant_id, known, "merchant_id")
    if p.role == Role.SERVICE_PROVIDER and merchant.parent_id != p.party_id:
        raise DomainError(ErrorCode.NOT_YOUR_SUB_MERCHANT,
                          f"{merchant_id} is not a sub-merchant of {p.party_id}", "merchant_id")
    return merchant


def acting_merchant_id(p: Principal, merchant_id: str | None) -> str | None:
    """The party ``acting_merchant`` reads for this caller and ``merchant_id``, if any."""
    return p.party_id if p.role == Role.MERCHANT else merchant_id


def _merchant(conn: Connection, merchant_id: str, known: Mapping[str, Party] | None,
              param: str) -> Party:
    found = known.get(merchant_id) if known is not None and isinstance(merchant_id, str) \
        else None
    if found is not None and found.kind == PartyKind.MERCHANT:
        return found
    return require_party(conn, merchant_id, PartyKind.MERCHANT, param)


def may_see_order(p: Principal, order: Order) -> bool:
    if p.role == Role.OPERATOR:
        return True
    if p.role == Role.MERCHANT:
        return order.merchant_id == p.party_id
    if p.role == Role.SERVICE_PROVIDER:
        return order.sp_id == p.party_id
    if p.role == Role.CONSUMER:
        return order.payer_id == p.party_id or order.status == "open"
    return False


def visible_order(conn: Connection, p: Principal, order_id: str, *,
                  for_update: bool = False) -> Order:
    order = get_order(conn, order_id, for_update=for_update)
    if order is None or not may_see_order(p, order):
        raise DomainError(ErrorCode.ORDER_NOT_FOUND, f"no order {order_id!r}", "id")
    return order


def managing_merchant(conn: Connection, p: Principal, merchant_id: str) -> Party:
    """A merchant an operator or its own service provider may administer (or itself, to read)."""
    merchant = require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    if p.role == Role.OPERATOR:
        return merchant
    if p.role == Role.SERVICE_PROVIDER and merchant.parent_id == p.party_id:
        return merchant
    if p.role == Role.MERCHANT and merchant.id == p.party_id:
        return merchant
    raise DomainError(ErrorCode.PARTY_NOT_FOUND, f"no merchant {merchant_id!r}", "merchant_id")


def owner_visible(p: Principal, owner_id: str, conn: Connection) -> bool:
    """May the caller see the ledger accounts of ``owner_id``?"""
    if p.role == Role.OPERATOR or p.party_id == owner_id:
        return True
    if p.role == Role.SERVICE_PROVIDER:
        owner = require_party(conn, owner_id) if owner_id.startswith("mch_") else None
        return owner is not None and owner.parent_id == p.party_id
    return False


CLIENT_IP_HEADER = "Lianjie-Client-Ip"
DEVICE_ID_HEADER = "Lianjie-Device-Id"
DEVICE_ID_LEN_MAX = 64  # the risk log's column
_SPEAKS_FOR_CLIENTS = (Role.SERVICE_PROVIDER, Role.INSTITUTION)


@dataclass(frozen=True, slots=True)
class ClientContext:
    client_ip: str | None
    device_id: str | None


def client_context(request: Request, p: Principal, device_id: str | None) -> ClientContext:
    """The end client's IP address and device, as the risk engine should see them.

    A consumer's or merchant's own request: the connection's peer and the body's
    ``device_id``. A service provider or institution calls from its own servers on behalf of
    its clients, so its address says nothing about them (and would tie all of them together in
    the IP features): it passes the client's in the ``Lianjie-Client-Ip`` and
    ``Lianjie-Device-Id`` headers, and without them the IP is unknown. Any other key sending
    those headers is refused (``untrusted_client_context``): a client naming its own address
    would slip past IP velocity and block lists."""
    ip_header = request.headers.get(CLIENT_IP_HEADER)
    device_header = request.headers.get(DEVICE_ID_HEADER)
    if p.role not in _SPEAKS_FOR_CLIENTS:
        if ip_header is not None or device_header is not None:
            raise DomainError(ErrorCode.UNTRUSTED_CLIENT_CONTEXT,
                              f"only service provider and institution keys may send "
                              f"{CLIENT_IP_HEADER} or {DEVICE_ID_HEADER}",
                              CLIENT_IP_HEADER if ip_header is not None else DEVICE_ID_HEADER)
        return ClientContext(request.client.host if request.client else None, device_id)
    ip = None
    if ip_header is not None:
        try:
            ip = str(ipaddress.ip_address(ip_header.strip()))
        except ValueError:
            raise DomainError(ErrorCode.INVALID_REQUEST, f"{CLIENT_IP_HEADER} is not an IPv4 or "
                              "IPv6 address", CLIENT_IP_HEADER) from None
    if device_header is not None:
        device_id = device_header.strip()
        if not 0 < len(device_id) <= DEVICE_ID_LEN_MAX:
            raise DomainError(ErrorCode.INVALID_REQUEST, f"{DEVICE_ID_HEADER} must have 1 to "
                              f"{DEVICE_ID_LEN_MAX} characters", DEVICE_ID_HEADER)
    return ClientContext(ip, device_id)
