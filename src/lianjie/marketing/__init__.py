"""Marketing: red packets, campaigns with hard budgets, coupons, segments and reports.

Every money movement is a ledger entry: red packets hold their money in an escrow account of
their own from sending to grabbing, campaigns hold theirs in a budget account that cannot go
below zero, and a coupon's discount is a leg of the payment's own entry. Grabs, claims and
redemptions pass through ``risk.screen`` before anything moves.
"""

from lianjie.marketing.batcher import GrabBatcher
from lianjie.marketing.campaigns import (
    Campaign,
    budget_left,
    campaign_payload,
    do_create_campaign,
    do_create_campaign_packet,
    do_end_campaign,
    do_end_due_campaigns,
    do_fund_campaign,
    get_campaign,
    in_holdout,
    list_campaigns,
    require_campaign,
)
from lianjie.marketing.coupons import (
    Coupon,
    Issuance,
    Template,
    coupon_payload,
    coupons_of,
    discount_for,
    do_claim,
    do_create_template,
    do_issue_to_segment,
    get_coupon,
    require_template,
    template_payload,
    templates_of,
)
from lianjie.marketing.groups import Group, do_add_members, do_create_group, require_group
from lianjie.marketing.listing import (
    BudgetPoint,
    all_segments,
    budget_history,
    recent_campaigns,
    recent_packets,
    redeemed_per_template,
)
from lianjie.marketing.redpackets import (
    Grab,
    GrabRequest,
    RedPacket,
    do_expire_packets,
    do_grab,
    do_grab_many,
    do_send,
    grabs_of,
    packet_payload,
    require_packet,
)
from lianjie.marketing.report import campaign_report
from lianjie.marketing.segments import (
    Segment,
    do_create_segment,
    do_refresh_due,
    do_refresh_segment,
    members_of,
    require_segment,
    segment_payload,
)
from lianjie.marketing.split import all_shares, share

__all__ = [
    "BudgetPoint",
    "Campaign",
    "Coupon",
    "Grab",
    "GrabBatcher",
    "GrabRequest",
    "Group",
    "Issuance",
    "RedPacket",
    "Segment",
    "Template",
    "all_segments",
    "all_shares",
    "budget_history",
    "budget_left",
    "campaign_payload",
    "campaign_report",
    "coupon_payload",
    "coupons_of",
    "discount_for",
    "do_add_members",
    "do_claim",
    "do_create_campaign",
    "do_create_campaign_packet",
    "do_create_group",
    "do_create_segment",
    "do_create_template",
    "do_end_campaign",
    "do_end_due_campaigns",
    "do_expire_packets",
    "do_fund_campaign",
    "do_grab",
    "do_grab_many",
    "do_issue_to_segment",
    "do_refresh_due",
    "do_refresh_segment",
    "do_send",
    "get_campaign",
    "get_coupon",
    "grabs_of",
    "in_holdout",
    "list_campaigns",
    "members_of",
    "packet_payload",
    "recent_campaigns",
    "recent_packets",
    "redeemed_per_template",
    "require_campaign",
    "require_group",
    "require_packet",
    "require_segment",
    "require_template",
    "segment_payload",
    "share",
    "template_payload",
    "templates_of",
]
