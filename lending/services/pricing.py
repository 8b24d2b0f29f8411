"""Prices for loans: a crypto pair valued through a common fiat of the price index.

The index holds fiat per one unit of an asset (marketplace.PriceIndex). For a loan in asset A
with collateral in asset C, both are valued in the first fiat of LTV_FIATS for which the index
has both A and C (EUR, else USD): the price of one C in A is price(C, fiat) / price(A, fiat).
The LTV is the debt still scheduled (principal plus interest) times price(A, fiat) over the
collateral amount times price(C, fiat). The pair's age is that of its older price.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext

from common.errors import Conflict
from marketplace.models import PriceIndex

LTV_FIATS = ("EUR", "USD")


@dataclass(frozen=True, slots=True)
class PairPrice:
    fiat: str
    asset_price: Decimal  # fiat per one unit of the loan's asset
    collateral_price: Decimal  # fiat per one unit of the collateral
    updated_at: datetime  # the older of the two
    # Why the price feed marked either price stale (marketplace.services.prices), if it did.
    stale_reason: str = ""

    def is_stale(self, now: datetime | None = None) -> bool:
        """Older than PRICE_MAX_AGE, or marked stale by the price feed (every source failed):
        no liquidation on it until a fresh price comes in."""
        if self.stale_reason:
            return True
        age = (now or timezone.now()) - self.updated_at
        return age > timedelta(seconds=settings.PRICE_MAX_AGE)

    def value_in_asset(self, collateral: Decimal) -> Decimal:
        """What `collateral` is worth in units of the loan's asset (unrounded)."""
        with localcontext() as ctx:
            ctx.prec = 60
            return collateral * self.collateral_price / self.asset_price

    def collateral_for(self, amount: Decimal) -> Decimal:
        """How much collateral is worth `amount` of the loan's asset (unrounded)."""
        with localcontext() as ctx:
            ctx.prec = 60
            return amount * self.asset_price / self.collateral_price

    def ltv(self, *, debt: Decimal, collateral: Decimal) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = 60
            return (debt * self.asset_price) / (collateral * self.collateral_price)


def pair_prices(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], PairPrice]:
    """pair_price for many (asset, collateral asset) pairs in one query; a pair without a
    common fiat is left out."""
    wanted = set(pairs)
    rows = PriceIndex.objects.filter(
        asset_id__in={a for pair in wanted for a in pair}, fiat__code__in=LTV_FIATS
    ).values_list("asset_id", "fiat__code", "price", "updated_at", "stale_since", "stale_reason")
    found = {(a, f): (p, u, _flag(since, why)) for a, f, p, u, since, why in rows}
    prices: dict[tuple[int, int], PairPrice] = {}
    for asset_id, collateral_asset_id in wanted:
        for fiat in LTV_FIATS:
            a, c = found.get((asset_id, fiat)), found.get((collateral_asset_id, fiat))
            if a and c:
                prices[asset_id, collateral_asset_id] = PairPrice(
                    fiat,
                    a[0],
                    c[0],
                    min(a[1], c[1]),
                    stale_reason="; ".join(filter(None, (a[2], c[2]))),
                )
                break
    return prices


def _flag(stale_since: datetime | None, reason: str) -> str:
    return (reason or "marked stale by the price feed") if stale_since is not None else ""


def pair_price(*, asset_id: int, collateral_asset_id: int) -> PairPrice:
    """Both assets' prices in the first common fiat; a clear conflict when there is none."""
    price = pair_prices([(asset_id, collateral_asset_id)]).get((asset_id, collateral_asset_id))
    if price is None:
        raise Conflict(
            gettext("No price index values both assets in EUR or USD: the loan can't be valued."),
            code="no_price",
            fields={"collateral_asset": [gettext("No common price index for this pair.")]},
        )
    return price
