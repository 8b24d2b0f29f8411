# Disputes, evidence and moderator decisions arrive with the disputes issue; until then a trade
# can reach `disputed` through escrow.services.trade_dispute and stays there.
