"""The marketing pages in a real headless Chromium: a finance user opens a campaign, sees its
budget chart drawn and its report, and ends it; a support user is not offered the action and is
refused when forcing it. SQLite only, like the other browser tests, sharing their browser."""

from __future__ import annotations

import re
from typing import Any

from console_support import Console, browser, cheap_hashes, console, db_kind, log_in, page

assert console and cheap_hashes and browser and db_kind and page  # fixtures

DAY_S = 86_400


def _campaign(console: Console) -> dict[str, Any]:
    api = console.api
    ends = int(api.clock.now().timestamp()) + 30 * DAY_S
    campaign = api.ok("POST", "/v1/campaigns", api.operator_key,
                      {"name": "Lantern Festival", "budget": 50_000, "ends_at": ends,
                       "holdout_bps": 2000})
    api.ok("POST", f"/v1/campaigns/{campaign['id']}/red_packets", api.operator_key,
           {"amount": 1_000, "shares": 4, "split": "equal"})
    return campaign


def test_finance_opens_a_campaign_sees_its_budget_and_ends_it(console: Console,
                                                             page: Any) -> None:
    api = console.api
    campaign = _campaign(console)
    log_in(page, console, "finance")
    page.click("#nav-marketing")
    page.click(f"#campaigns tr[data-id='{campaign['id']}'] a")
    page.wait_for_url(re.compile(f".*/console/marketing/campaigns/{campaign['id']}$"))
    page.wait_for_selector("#chart-budget[data-drawn=true]")
    page.wait_for_selector("#chart-uplift[data-drawn=true]")
    drawn = page.evaluate("Chart.getChart('chart-budget').data.datasets.map(d => d.data)")
    assert drawn == [[500, 500], [0, 10], [500, 490]]  # funded, paid out, remaining
    assert "¥10.00" in page.text_content("#campaign-facts")  # in red packets
    assert "Holdout" in page.text_content("#campaign-report")
    page.once("dialog", lambda d: d.accept())
    page.click("#end-campaign")
    page.wait_for_selector(".flash.ok")
    assert "ended" in page.text_content(".toolbar:not(#marketing-tabs)")
    assert page.query_selector("#end-campaign") is None
    ended = api.ok("GET", f"/v1/campaigns/{campaign['id']}", api.operator_key)
    assert (ended["status"], ended["budget_left"]) == ("ended", 0)
    page.wait_for_function("Chart.getChart('chart-budget').data.datasets[2].data.at(-1) === 0")


def test_support_is_refused_the_end_campaign_action(console: Console, page: Any) -> None:
    api = console.api
    campaign = _campaign(console)
    log_in(page, console, "support")
    page.goto(f"{console.url}/marketing/campaigns/{campaign['id']}")
    page.wait_for_selector("#chart-budget[data-drawn=true]")
    assert page.query_selector("#end-campaign") is None
    # forcing it: a form like the finance user's, with support's own CSRF token
    token = page.get_attribute("input[name=csrf_token]", "value")
    page.evaluate("""([url, token]) => {
        const f = document.createElement('form'); f.method = 'post'; f.action = url;
        const i = document.createElement('input'); i.name = 'csrf_token'; i.value = token;
        f.appendChild(i); document.body.appendChild(f); f.submit(); }""",
                  [f"/console/marketing/campaigns/{campaign['id']}/end", token])
    page.wait_for_selector("#refusal")
    assert "Your role (Support) may not do this: end a campaign" in \
        page.text_content("#refusal")
    assert api.ok("GET", f"/v1/campaigns/{campaign['id']}", api.operator_key)[
        "status"] == "active"
    refused = [a for a in console.audit_rows() if a.action == "campaign_end"]
    assert [(a.username, a.outcome) for a in refused] == [("support", "role_refused")]
