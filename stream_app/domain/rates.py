"""Every count and ratio of a view's key in a window, from the vector the view counts.

One function per view turns a vector into the named figures that the rates and KPI
topics, the metrics and the query API all show, so they never disagree.
"""

from __future__ import annotations

from typing import Any

from stream_app.domain.bands import Bands
from stream_app.domain.events import MICROS_PER_UNIT
from stream_app.domain.views import CHANNEL_SEGMENT, PURCHASES, Key, View


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None while the denominator is 0 (a rate is then absent)."""
    return numerator / denominator if denominator else None


def figures(view: View, key: Key, vector: list[int], bands: Bands) -> dict[str, Any]:
    named = dict(zip(view.fields, vector, strict=True))
    if view is PURCHASES:
        return _purchase_figures(key, named, bands)
    offers, conversions = named["offers"], named["conversions"]
    rate = ratio(conversions, offers)
    return {
        "offers": offers,
        "conversions": conversions,
        "rate": rate,
        "revenue": named["revenue_micros"] / MICROS_PER_UNIT,
        "customers_targeted": named["customers_targeted"],
        "customers_upsold": named["customers_upsold"],
        "customer_rate": ratio(named["customers_upsold"], named["customers_targeted"]),
        "band": bands.campaign.band(rate),
    }


def _purchase_figures(key: Key, named: dict[str, int], bands: Bands) -> dict[str, Any]:
    upsell, other = named["upsell_purchases"], named["other_purchases"]
    upsell_amount = named["upsell_amount_micros"] / MICROS_PER_UNIT
    other_amount = named["other_amount_micros"] / MICROS_PER_UNIT
    upsell_mean, other_mean = ratio(upsell_amount, upsell), ratio(other_amount, other)
    rate = ratio(upsell, upsell + other)
    scale = bands.loyalty if key[0] == "member" else bands.campaign
    return {
        "purchases": upsell + other,
        "upsell_purchases": upsell,
        "other_purchases": other,
        "amount": upsell_amount + other_amount,
        "upsell_amount": upsell_amount,
        "other_amount": other_amount,
        "transaction_rate": rate,
        "revenue_share": ratio(upsell_amount, upsell_amount + other_amount),
        "aov_uplift": None
        if upsell_mean is None or other_mean is None
        else upsell_mean - other_mean,
        "buyers": named["buyers_any"],
        "upsell_buyers": named["buyers_upsell"],
        "buyer_rate": ratio(named["buyers_upsell"], named["buyers_any"]),
        "band": scale.band(rate),
    }


def headline(view: View) -> str:
    """The rate a view's band is taken from."""
    return "transaction_rate" if view is PURCHASES else "rate"


__all__ = ["CHANNEL_SEGMENT", "figures", "headline", "ratio"]
