"""Reads of escrow's rows: trades and their chat, traders' trade figures, settlements."""

from escrow.selectors.settlement import settlement_failed_count, settlement_status_for_trade
from escrow.selectors.stats import (
    feedback_on_trade,
    feedback_received,
    feedback_summary,
    taker_facts,
    trade_value_eur,
    trade_volume_eur,
    trader_stats,
    trader_stats_for_users,
    trader_stats_recent,
)
from escrow.selectors.trades import (
    ANSWER_RELATED,
    TradeRoomState,
    trade_ensure_readable,
    trade_events_load,
    trade_for_answer,
    trade_get_for_user,
    trade_list_for_user,
    trade_message_attachment,
    trade_messages,
    trade_room_state,
)

__all__ = [
    "ANSWER_RELATED",
    "TradeRoomState",
    "feedback_on_trade",
    "feedback_received",
    "feedback_summary",
    "settlement_failed_count",
    "settlement_status_for_trade",
    "taker_facts",
    "trade_ensure_readable",
    "trade_events_load",
    "trade_for_answer",
    "trade_get_for_user",
    "trade_list_for_user",
    "trade_message_attachment",
    "trade_messages",
    "trade_room_state",
    "trade_value_eur",
    "trade_volume_eur",
    "trader_stats",
    "trader_stats_for_users",
    "trader_stats_recent",
]
