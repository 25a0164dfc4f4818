"""Business-type profiles: how much each kind of merchant sells, when, and at what ticket size.

Everything the simulator knows about a business type is data in one ``Profile`` here, so a new
type (or a retuned one) is one entry, not a code change. The numbers are plausible for a
Chinese city, not measured:

- ``curve_weekday`` / ``curve_weekend``: relative sales in each hour of the local day (0-23).
  Street food peaks at breakfast, lunch and dinner; restaurants at lunch and dinner; convenience
  stores in the evening; market stalls in the early morning; weekends start later.
- ``intensity``: daily purchases at one merchant of the type, relative to the others, and
  ``weekend_factor`` how that changes on Saturday and Sunday.
- Ticket sizes are log-normal around ``median_yuan`` with shape ``sigma``, clamped to
  ``[min_yuan, max_yuan]`` and rounded to ``rounding_fen`` (a stall prices by the half yuan, a
  fruit shop weighs to the fen).
- ``static_share``: the share of payments made by scanning the merchant's static collection code
  and typing the amount; the rest are dynamic orders the merchant's till creates.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from lianjie.money import AMOUNT_MAX

FEN_PER_YUAN = 100
HOURS = 24


@dataclass(frozen=True, slots=True)
class Profile:
    business_type: str
    merchant_weight: float  # share of merchants of this type in a population
    intensity: float
    weekend_factor: float
    median_yuan: float
    sigma: float
    min_yuan: float
    max_yuan: float
    rounding_fen: int
    static_share: float
    stores_max: int
    curve_weekday: tuple[int, ...]
    curve_weekend: tuple[int, ...]
    names: tuple[tuple[str, str], ...]  # (Chinese, English) shop nouns
    items: tuple[str, ...]  # what an order's description says

    def __post_init__(self) -> None:
        assert len(self.curve_weekday) == HOURS and len(self.curve_weekend) == HOURS
        assert sum(self.curve_weekday) > 0 and sum(self.curve_weekend) > 0
        assert 0 < self.min_yuan <= self.median_yuan <= self.max_yuan
        assert self.max_yuan * FEN_PER_YUAN <= AMOUNT_MAX and self.rounding_fen >= 1
        assert 0.0 <= self.static_share <= 1.0 and self.stores_max >= 1

    def curve(self, weekend: bool) -> tuple[int, ...]:
        return self.curve_weekend if weekend else self.curve_weekday

    def ticket_fen(self, rng: random.Random) -> int:
        """One purchase amount in fen: log-normal, clamped, rounded to the type's price step."""
        yuan = rng.lognormvariate(math.log(self.median_yuan), self.sigma)
        yuan = min(max(yuan, self.min_yuan), self.max_yuan)
        step = self.rounding_fen
        fen = round(yuan * FEN_PER_YUAN / step) * step
        return max(fen, step)


_STREET_FOOD = (1, 0, 0, 0, 0, 2, 10, 30, 32, 12, 6, 18, 30, 20, 6, 4, 6, 14, 22, 18, 10, 8, 8, 4)
_STREET_FOOD_WE = (2, 1, 0, 0, 0, 1, 4, 12, 20, 20, 10, 16, 26, 20, 8, 6, 8, 14, 24, 22, 14, 12,
                   10, 6)
_RESTAURANT = (1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 24, 36, 18, 4, 2, 3, 16, 34, 30, 14, 6, 3, 2)
_RESTAURANT_WE = (2, 0, 0, 0, 0, 0, 0, 0, 1, 2, 6, 24, 36, 26, 8, 4, 6, 22, 40, 38, 20, 10, 5, 3)
_CONVENIENCE = (4, 3, 2, 1, 1, 2, 4, 10, 14, 8, 6, 8, 10, 8, 6, 6, 8, 12, 16, 18, 20, 18, 14, 8)
_CONVENIENCE_WE = (6, 4, 2, 1, 1, 1, 2, 5, 8, 9, 10, 11, 12, 11, 10, 10, 11, 13, 16, 18, 20, 18,
                   15, 10)
_MARKET = (0, 0, 0, 0, 0, 6, 22, 30, 26, 16, 10, 8, 4, 2, 2, 4, 10, 16, 12, 4, 1, 0, 0, 0)
_MARKET_WE = (0, 0, 0, 0, 0, 4, 16, 28, 32, 26, 18, 10, 6, 3, 3, 6, 12, 16, 12, 5, 2, 0, 0, 0)
_CAFE = (0, 0, 0, 0, 0, 0, 1, 8, 20, 16, 10, 8, 8, 10, 14, 12, 8, 5, 3, 2, 1, 0, 0, 0)
_CAFE_WE = (0, 0, 0, 0, 0, 0, 0, 2, 6, 12, 16, 14, 12, 14, 18, 18, 14, 8, 4, 3, 2, 0, 0, 0)
_BAKERY = (0, 0, 0, 0, 0, 0, 6, 20, 18, 8, 4, 4, 4, 4, 5, 6, 10, 16, 14, 8, 3, 1, 0, 0)
_BAKERY_WE = (0, 0, 0, 0, 0, 0, 2, 10, 16, 14, 8, 6, 6, 6, 7, 8, 12, 16, 14, 8, 3, 1, 0, 0)
_SHOP = (0, 0, 0, 0, 0, 0, 0, 1, 3, 6, 8, 9, 9, 8, 8, 8, 9, 12, 14, 14, 12, 8, 3, 1)
_SHOP_WE = (0, 0, 0, 0, 0, 0, 0, 1, 2, 5, 10, 12, 12, 12, 12, 12, 12, 14, 15, 14, 12, 8, 3, 1)
_ONLINE = (6, 4, 2, 1, 1, 1, 1, 2, 4, 6, 7, 8, 10, 8, 7, 7, 7, 8, 10, 12, 16, 20, 18, 12)

PROFILES: dict[str, Profile] = {p.business_type: p for p in (
    Profile("street_food", 14, 1.6, 0.8, 15, 0.35, 4, 60, 50, 0.85, 1,
            _STREET_FOOD, _STREET_FOOD_WE,
            (("煎饼", "Jianbing"), ("包子铺", "Baozi"), ("肉夹馍", "Roujiamo"),
             ("烧烤", "Skewers"), ("凉皮", "Liangpi")),
            ("jianbing", "baozi x4", "roujiamo", "lamb skewers", "cold noodles", "soy milk")),
    Profile("convenience_store", 9, 1.6, 1.0, 22, 0.6, 2, 300, 10, 0.25, 3,
            _CONVENIENCE, _CONVENIENCE_WE,
            (("便利店", "Mart"), ("超市", "Minimarket"), ("24小时店", "24h Store")),
            ("drinks", "snacks", "instant noodles", "household", "cigarettes", "fruit cup")),
    Profile("market_stall", 9, 1.3, 1.3, 18, 0.6, 2, 200, 1, 0.9, 1,
            _MARKET, _MARKET_WE,
            (("蔬菜摊", "Vegetables"), ("鲜肉", "Fresh Meat"), ("水产", "Seafood"),
             ("豆腐坊", "Tofu")),
            ("vegetables", "pork 1 jin", "tofu", "eggs", "fish", "chives")),
    Profile("restaurant", 9, 1.0, 1.3, 110, 0.45, 30, 800, 100, 0.3, 3,
            _RESTAURANT, _RESTAURANT_WE,
            (("饭馆", "Kitchen"), ("火锅", "Hotpot"), ("面馆", "Noodle House"),
             ("川菜馆", "Sichuan House")),
            ("dinner for two", "lunch set", "hotpot", "family dinner", "noodles and dishes")),
    Profile("cafe", 4, 1.0, 0.9, 28, 0.3, 12, 120, 100, 0.4, 2,
            _CAFE, _CAFE_WE,
            (("咖啡", "Coffee"), ("奶茶", "Milk Tea")),
            ("latte", "americano", "milk tea", "cake and coffee")),
    Profile("bakery", 3, 1.0, 1.0, 20, 0.45, 5, 150, 50, 0.6, 2,
            _BAKERY, _BAKERY_WE,
            (("面包房", "Bakery"), ("糕点", "Pastries")),
            ("bread", "egg tarts", "birthday cake", "buns")),
    Profile("fruit_shop", 4, 0.8, 1.2, 30, 0.5, 5, 200, 1, 0.85, 1,
            _SHOP, _SHOP_WE,
            (("水果店", "Fruit"), ("果园", "Orchard")),
            ("apples", "oranges", "durian", "grapes", "watermelon")),
    Profile("pharmacy", 2, 0.5, 0.9, 45, 0.7, 5, 600, 10, 0.4, 1,
            _SHOP, _SHOP_WE,
            (("大药房", "Pharmacy"),),
            ("cold medicine", "vitamins", "masks", "bandages")),
    Profile("hair_salon", 2, 0.2, 1.5, 60, 0.6, 20, 500, 500, 0.8, 1,
            _SHOP, _SHOP_WE,
            (("理发店", "Hair Salon"),),
            ("haircut", "colouring", "wash and cut")),
    Profile("repair_shop", 1, 0.15, 1.0, 80, 0.8, 10, 1000, 500, 0.9, 1,
            _SHOP, _SHOP_WE,
            (("维修", "Repairs"),),
            ("phone screen", "shoe repair", "bicycle repair", "keys")),
    Profile("clothing", 2, 0.4, 1.8, 160, 0.6, 30, 1500, 100, 0.3, 2,
            _SHOP, _SHOP_WE,
            (("服装店", "Fashion"),),
            ("jacket", "t-shirt", "shoes", "dress")),
    Profile("online_shop", 1, 0.6, 1.2, 70, 0.8, 5, 2000, 10, 0.0, 1,
            _ONLINE, _ONLINE,
            (("网店", "Online Store"),),
            ("online order", "mini-program order", "group buy")),
    Profile("other", 1, 0.5, 1.0, 40, 0.8, 2, 800, 10, 0.6, 1,
            _SHOP, _SHOP_WE,
            (("小店", "Shop"),),
            ("goods", "services")),
)}

# The types every population of four or more merchants includes, so even a small run shows the
# main rhythms.
CORE_TYPES = ("street_food", "convenience_store", "market_stall", "restaurant")
