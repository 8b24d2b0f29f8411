"""Lending's listeners on lower apps' hooks, registered by LendingConfig.ready()."""

from __future__ import annotations

from django.db.models import Q

from common.outbox import publish_after_commit
from lending.models import Loan
from marketplace.models import PriceIndex


def on_price_moved(price: PriceIndex) -> None:
    """A price index moved (called on commit): when an open loan borrows or pledges that asset,
    queue the LTV check (margin calls once per crossing, liquidations). The check is set-based
    and beat runs it too, so a lost message only delays it to the next run."""
    from lending.tasks import check_ltv

    open_loans = Loan.objects.filter(
        Q(asset_id=price.asset_id) | Q(collateral_asset_id=price.asset_id),
        state__in=(Loan.State.ACTIVE, Loan.State.LATE),
    )
    if open_loans.exists():
        publish_after_commit(check_ltv)
