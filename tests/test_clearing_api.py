"""Clearing over real HTTP: end of day, e-receipts verified offline and by the API, statements
scoped to their owner, a partner's file uploaded once, and refusals that change nothing."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.conftest import Api

from lianjie.clearing import verify

DAY = "2026-01-05"  # the api fixture's clock starts at 08:00 Shanghai time on this day


def _setup(api: Api) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    consumer = api.consumer(funds=500_00)
    merchant = api.merchant()
    order = api.order(merchant, 12_00)
    r = api.pay(consumer, order)
    assert r.status_code == 200, r.text
    return consumer, merchant, order


def test_end_of_day_receipts_and_statements(api: Api) -> None:
    _, merchant, order = _setup(api)
    other = api.merchant()
    api.refused(409, "business_day_not_over", "POST", "/v1/clearing/end_of_day",
                api.operator_key, {"business_date": DAY})
    api.refused(409, "not_logged_yet", "GET", f"/v1/orders/{order['id']}/receipt",
                merchant["api_key"])  # type: ignore[arg-type]
    api.clock.advance(timedelta(hours=17))
    api.refused(403, "forbidden", "POST", "/v1/clearing/end_of_day",
                merchant["api_key"], {"business_date": DAY})  # type: ignore[arg-type]
    report = api.ok("POST", "/v1/clearing/end_of_day", api.operator_key, {"business_date": DAY})
    assert report["steps"]["settle"]["settled"] == 1
    again = api.ok("POST", "/v1/clearing/end_of_day", api.operator_key, {"business_date": DAY})
    assert again["resumed"] == ["settle", "credit", "seal", "clear"]
    receipt = api.ok("GET", f"/v1/orders/{order['id']}/receipt", merchant["api_key"])  # type: ignore[arg-type]
    pem = api.client.get("/v1/clearing/public_key",
                         headers={"Authorization": f"Bearer {api.operator_key}"}).content
    assert verify.verify_document(receipt, verify.load_public_key(pem))["ok"]
    assert api.ok("POST", "/v1/receipts/verify", merchant["api_key"], receipt)["ok"]  # type: ignore[arg-type]
    forged = json.loads(json.dumps(receipt))
    forged["proof"]["entry"] = forged["proof"]["entry"].replace('"payment"', '"paymenx"')
    api.refused(400, "invalid_proof", "POST", "/v1/receipts/verify", api.operator_key, forged)
    forged = json.loads(json.dumps(receipt))
    forged["proof"]["head"]["signature"] = "00" * 64
    api.refused(400, "invalid_signature", "POST", "/v1/receipts/verify", api.operator_key,
                forged)
    forged = json.loads(json.dumps(receipt))
    forged["payment"]["amount"] = 1
    api.refused(400, "invalid_proof", "POST", "/v1/receipts/verify", api.operator_key, forged)
    # statements: the merchant's own, in every format; not another merchant's
    key = merchant["api_key"]
    csv_r = api.client.get(f"/v1/clearing/statements/{merchant['id']}/{DAY}.csv",
                           headers={"Authorization": f"Bearer {key}"})
    assert csv_r.status_code == 200 and f"txf_{receipt['entry_id'][4:]}" in csv_r.text
    for fmt in ("camt053", "mt940", "proofs"):
        r = api.client.get(f"/v1/clearing/statements/{merchant['id']}/{DAY}.{fmt}",
                           headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
    api.refused(404, "party_not_found", "GET",
                f"/v1/clearing/statements/{other['id']}/{DAY}.csv", key)  # type: ignore[arg-type]
    settled = api.ok("GET", "/v1/clearing/settlements", key)  # type: ignore[arg-type]
    assert [s["amount"] for s in settled["data"]] == [12_00 - 5]  # 0.38% fee rounds to 5
    head = api.ok("GET", f"/v1/clearing/heads/{DAY}", merchant["api_key"])  # type: ignore[arg-type]
    assert head["tree_size"] == 2  # the top-up and the payment
    api.verify()


def test_partner_uploads_its_file_once(api: Api) -> None:
    _setup(api)
    bank = api.institution
    api.clock.advance(timedelta(hours=17))
    api.ok("POST", "/v1/clearing/end_of_day", api.operator_key, {"business_date": DAY})
    camt = api.client.get(f"/v1/clearing/statements/{bank['id']}/{DAY}.camt053",
                          headers={"Authorization": f"Bearer {bank['api_key']}"}).text
    body = {"business_date": DAY, "format": "camt053", "content": camt}
    result = api.ok("POST", "/v1/clearing/reconciliations", bank["api_key"], body)
    assert result["summary"] == {"matched": 1}
    api.refused(409, "duplicate_file", "POST", "/v1/clearing/reconciliations",
                bank["api_key"], body)
    api.refused(400, "invalid_file", "POST", "/v1/clearing/reconciliations", bank["api_key"],
                {**body, "content": camt[:200]})
    api.refused(400, "currency_mismatch", "POST", "/v1/clearing/reconciliations",
                bank["api_key"], {**body, "content": camt.replace("CNY", "USD")})
    positions = api.ok("GET", f"/v1/clearing/positions/{DAY}", bank["api_key"])
    assert [p["net"] for p in positions["positions"]] == [-500_00]
    assert api.ok("GET", f"/v1/clearing/reconciliations/{result['id']}",
                  bank["api_key"])["id"] == result["id"]


def test_operator_sets_terms_and_caps(api: Api) -> None:
    _, merchant, _ = _setup(api)
    bank = api.institution
    path = f"/v1/clearing/merchant_terms/{merchant['id']}"
    api.refused(403, "forbidden", "POST", path, merchant["api_key"], {"delay_days": 0})  # type: ignore[arg-type]
    api.refused(400, "invalid_request", "POST", path, api.operator_key, {"delay_days": 31},
                param="delay_days")
    api.refused(404, "party_not_found", "POST", path, api.operator_key,
                {"delay_days": 0, "payout_institution_id": "ins_nobody"})
    api.refused(400, "invalid_amount", "POST", f"/v1/clearing/net_debit_caps/{bank['id']}",
                api.operator_key, {"net_debit_cap": -1})
    assert api.ok("POST", path, api.operator_key, {"delay_days": 0})["delay_days"] == 0
    api.ok("POST", f"/v1/clearing/net_debit_caps/{bank['id']}", api.operator_key,
           {"net_debit_cap": 100_00})
    api.clock.advance(timedelta(hours=17))
    report = api.ok("POST", "/v1/clearing/end_of_day", api.operator_key, {"business_date": DAY})
    assert report["steps"]["clear"]["cap_exceeded"] == [bank["id"]]  # owes 500.00, cap 100.00
    settled = api.ok("GET", "/v1/clearing/settlements", api.operator_key)["data"]
    assert [s["value_date"] for s in settled] == [DAY]  # T+0
