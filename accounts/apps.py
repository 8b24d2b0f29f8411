from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Money leaves only with the owner's second factor (when 2FA is on) and never from a frozen
        # account: the ledger, a layer below, asks its registered guards before it holds one.
        from accounts.services import (
            ensure_can_withdraw,
            ensure_withdrawals_unlocked,
            require_second_factor,
            withdrawal_hold_reason,
        )
        from ledger.services import funds

        # A frozen account withdraws nothing; what it queued before the freeze waits for a
        # moderator. Nor does one whose password was just changed, until the lock ends.
        for guard in (ensure_can_withdraw, ensure_withdrawals_unlocked, require_second_factor):
            if guard not in funds.withdrawal_guards:
                funds.withdrawal_guards.append(guard)
        if withdrawal_hold_reason not in funds.withdrawal_hold_reasons:
            funds.withdrawal_hold_reasons.append(withdrawal_hold_reason)

        # Sock puppets: each login (and signup, which logs in) records the address and device.
        from django.contrib.auth.signals import user_logged_in

        from accounts.middleware import record_login_links

        user_logged_in.connect(record_login_links, dispatch_uid="accounts.record_login_links")
