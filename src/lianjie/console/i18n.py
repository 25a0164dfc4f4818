"""Messages in English and Simplified Chinese.

Every string the console shows is a key looked up here; templates call ``t("key")``. A page
module adds its own strings with ``add_messages`` at import time. A key missing in Chinese falls
back to English, and a key missing in both shows the key itself, so a missing string is visible
but never breaks a page. The chosen language is a cookie (``lianjie_lang``), so it also applies
to the log-in page.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "lianjie_lang"

_CATALOGUE: dict[str, dict[str, str]] = {"en": {}, "zh": {}}


def add_messages(messages: dict[str, tuple[str, str]]) -> None:
    """Register ``{key: (english, chinese)}``; a key registered twice must say the same."""
    for key, (en, zh) in messages.items():
        assert _CATALOGUE["en"].get(key, en) == en, f"message {key!r} registered twice"
        _CATALOGUE["en"][key] = en
        _CATALOGUE["zh"][key] = zh


def translate(lang: str, key: str, **values: Any) -> str:
    text = _CATALOGUE.get(lang, {}).get(key) or _CATALOGUE["en"].get(key) or key
    return text.format(**values) if values else text


def pick(lang: str | None) -> str:
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE


def catalogue(lang: str) -> dict[str, str]:
    """Every key in this language (English where missing): for tests and the JS side."""
    return {k: _CATALOGUE[lang].get(k) or v for k, v in _CATALOGUE["en"].items()}


add_messages({
    "app.title": ("Lianjie console", "连接 运营控制台"),
    "lang.switch": ("中文", "English"),
    "login.title": ("Operator log-in", "运营人员登录"),
    "login.username": ("User name", "用户名"),
    "login.password": ("Password", "密码"),
    "login.submit": ("Log in", "登录"),
    "login.failed": ("Wrong user name or password.", "用户名或密码错误。"),
    "login.throttled": ("Too many failed attempts. Try again in a few minutes.",
                        "失败次数过多，请几分钟后再试。"),
    "login.expired": ("Your session has ended. Please log in again.", "会话已结束，请重新登录。"),
    "logout": ("Log out", "退出"),
    "role.admin": ("Administrator", "管理员"),
    "role.risk_analyst": ("Risk analyst", "风控分析师"),
    "role.finance": ("Finance", "财务"),
    "role.support": ("Support", "客服"),
    "refused.title": ("Not allowed", "无权操作"),
    "refused.role": ("Your role ({role}) may not do this: {what}. Ask an administrator.",
                     "您的角色（{role}）无权执行此操作：{what}。请联系管理员。"),
    "refused.csrf": ("This form has expired or did not come from the console. Reload the page "
                     "and try again.", "表单已失效或并非来自控制台，请刷新页面后重试。"),
    "notfound.title": ("Not found", "未找到"),
    "done": ("Done.", "已完成。"),
    "error": ("Refused", "已拒绝"),
    "search": ("Search", "搜索"),
    "filter": ("Filter", "筛选"),
    "all": ("All", "全部"),
    "more": ("More", "更多"),
    "none": ("Nothing here yet.", "暂无数据。"),
    "col.id": ("ID", "编号"),
    "col.name": ("Name", "名称"),
    "col.status": ("Status", "状态"),
    "col.kyc": ("KYC", "实名审核"),
    "col.created": ("Created", "创建时间"),
    "col.amount": ("Amount", "金额"),
    "col.when": ("When", "时间"),
    "col.who": ("Who", "操作人"),
    "col.action": ("Action", "操作"),
    "col.target": ("Target", "对象"),
    "col.outcome": ("Outcome", "结果"),
    "col.before": ("Before", "之前"),
    "col.after": ("After", "之后"),
    "status.active": ("active", "正常"),
    "status.frozen": ("frozen", "已冻结"),
    "status.pending": ("pending", "待审核"),
    "status.approved": ("approved", "已通过"),
    "status.rejected": ("rejected", "已拒绝"),
    "status.open": ("open", "待支付"),
    "status.paid": ("paid", "已支付"),
    "status.closed": ("closed", "已关闭"),
    "status.expired": ("expired", "已过期"),
    "status.delivered": ("delivered", "已送达"),
    "status.failed": ("failed", "失败"),
    "status.succeeded": ("succeeded", "成功"),
})
