"""QR codes: the content a wallet scans, rendered as PNG or SVG with segno (pure Python).

An order's code carries ``{base_url}/q/{order_id}``; a static collection code carries
``{base_url}/c/{qr_code_id}``. The wallet opens the URL, shows what is being paid and asks the
consumer to confirm (or, for a static code, to enter the amount).
"""

from __future__ import annotations

import io

import segno

QR_SCALE = 6
QR_BORDER = 2


def order_content(base_url: str, order_id: str) -> str:
    return f"{base_url.rstrip('/')}/q/{order_id}"


def static_content(base_url: str, qr_code_id: str) -> str:
    return f"{base_url.rstrip('/')}/c/{qr_code_id}"


def render(content: str, kind: str) -> bytes:
    """The QR code of ``content`` as ``png`` or ``svg`` bytes (error correction level M)."""
    assert kind in ("png", "svg"), kind
    code = segno.make(content, error="m", micro=False)
    out = io.BytesIO()
    code.save(out, kind=kind, scale=QR_SCALE, border=QR_BORDER)
    return out.getvalue()
