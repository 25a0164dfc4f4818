"""Secrets are shown once: a new party's API key and webhook signing secret come back in the
creation response, work, and are never stored for idempotent replays. Wallets hold the
platform's currency."""

from sqlalchemy import text

from conftest import Api
from lianjie.api.runtime import REDACTED


def test_creation_shows_key_and_webhook_secret_once(api: Api) -> None:
    body = {"name": "Xiamen POS", "webhook_url": "http://127.0.0.1:9/hook"}
    first = api.call("POST", "/v1/service_providers", api.operator_key, body, idem="sp-once")
    assert first.status_code == 201
    sp = first.json()
    assert sp["api_key"].startswith("lj_sp_")
    assert sp["webhook_secret"] == api.webhook_secret(sp["id"])
    assert api.ok("GET", f"/v1/parties/{sp['id']}", sp["api_key"])["id"] == sp["id"]
    again = api.call("POST", "/v1/service_providers", api.operator_key, body, idem="sp-once")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    replay = again.json()
    assert replay["id"] == sp["id"]
    assert replay["api_key"] == REDACTED and replay["webhook_secret"] == REDACTED
    with api.rt.engine.connect() as conn:
        stored = " ".join(r[0] for r in conn.execute(text("SELECT body FROM idempotency_keys")))
    assert sp["api_key"] not in stored and sp["webhook_secret"] not in stored


def test_wallets_hold_the_platform_currency(api: Api) -> None:
    alice = api.consumer(funds=1_000)
    bank = api.institution["id"]
    with api.unchanged():
        api.refused(400, "currency_mismatch", "POST", "/v1/wallet/top_ups", alice["api_key"],
                    {"institution_id": bank, "amount": 100, "currency": "USD"})
        api.refused(400, "unknown_currency", "POST", "/v1/wallet/withdrawals",
                    alice["api_key"], {"institution_id": bank, "amount": 100,
                                       "currency": "XYZ"})
    assert api.balance(alice) == 1_000
