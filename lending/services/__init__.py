"""Every write of lending: requests, funding, installments, repayments, LTV and liquidation.
Split by concern; import from here."""

from lending.services.collection import installments_collect_due, loan_collect
from lending.services.controls import liquidations_paused, liquidations_set_paused
from lending.services.disputes import (
    dispute_listeners,
    loan_dispute_assign,
    loan_dispute_decide,
    loan_dispute_open,
    loan_dispute_statement,
)
from lending.services.loans import (
    Payoff,
    loan_add_collateral,
    loan_payoff_quote,
    loan_repay_early,
    loan_scheduled_debt,
)
from lending.services.offers import loan_offer_cancel, loan_offer_create, loan_offer_take
from lending.services.pricing import PairPrice, pair_price
from lending.services.requests import (
    loan_ltv_quote,
    loan_request_cancel,
    loan_request_close_due,
    loan_request_create,
    loan_request_fund,
    loan_requests_sweep,
)
from lending.services.risk import (
    loan_default,
    loan_liquidate,
    loans_check_ltv,
    loans_default_overdue,
    loans_liquidate,
    loans_ltv,
)
from lending.services.schedule import ScheduledInstallment, lender_shares, loan_schedule
from lending.services.transitions import (
    TRANSITIONS,
    event_listeners,
    liquidation_blocked_listeners,
    margin_call_listeners,
)

__all__ = [
    "TRANSITIONS",
    "PairPrice",
    "Payoff",
    "ScheduledInstallment",
    "dispute_listeners",
    "event_listeners",
    "installments_collect_due",
    "lender_shares",
    "liquidation_blocked_listeners",
    "liquidations_paused",
    "liquidations_set_paused",
    "loan_add_collateral",
    "loan_collect",
    "loan_default",
    "loan_dispute_assign",
    "loan_dispute_decide",
    "loan_dispute_open",
    "loan_dispute_statement",
    "loan_liquidate",
    "loan_ltv_quote",
    "loan_offer_cancel",
    "loan_offer_create",
    "loan_offer_take",
    "loan_payoff_quote",
    "loan_repay_early",
    "loan_request_cancel",
    "loan_request_close_due",
    "loan_request_create",
    "loan_request_fund",
    "loan_requests_sweep",
    "loan_schedule",
    "loan_scheduled_debt",
    "loans_check_ltv",
    "loans_default_overdue",
    "loans_liquidate",
    "loans_ltv",
    "margin_call_listeners",
    "pair_price",
]
