"""Who sees the account a trade's buyer pays into (the copy made when it opened): the buyer,
while the trade is open (funded, paid or disputed: not once it is settling or over); the
seller, whose account it is, as long; the moderator assigned to the trade's dispute, in any
state. Nobody else: not another trader, not a moderator who doesn't hold the dispute."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist

from escrow.models import Trade, TradePaymentAccount
from escrow.selectors.trades import may_read_trade

PAYMENT_DETAILS_STATES = frozenset({Trade.State.FUNDED, Trade.State.PAID, Trade.State.DISPUTED})


def trade_payment_account_for(*, trade: Trade, user: Any) -> TradePaymentAccount | None:
    """The trade's copy of the seller's payment account if this user may see it now, else None
    (also when the trade has none)."""
    role = trade.role_of(user)
    if role is not None:
        if trade.state not in PAYMENT_DETAILS_STATES:
            return None
    elif not may_read_trade(trade, user):  # the assigned moderator, registered by disputes
        return None
    try:
        return trade.payment_account
    except ObjectDoesNotExist:
        return None
