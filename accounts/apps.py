from typing import Any

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Money leaves only when its owner confirms with the fund password (the 2FA code, or the
        # account password without 2FA) and never from a frozen account: the ledger, a layer
        # below, asks its registered confirmers and guards before it holds one.
        from accounts.services import (
            ensure_can_withdraw,
            ensure_withdrawals_unlocked,
            funds_confirm,
            withdrawal_hold_reason,
        )
        from ledger.services import funds

        if funds_confirm not in funds.withdrawal_confirmers:
            funds.withdrawal_confirmers.append(funds_confirm)
        # A frozen account withdraws nothing; what it queued before the freeze waits for a
        # moderator. Nor does one whose password was just changed, until the lock ends.
        for guard in (ensure_can_withdraw, ensure_withdrawals_unlocked):
            if guard not in funds.withdrawal_guards:
                funds.withdrawal_guards.append(guard)
        if withdrawal_hold_reason not in funds.withdrawal_hold_reasons:
            funds.withdrawal_hold_reasons.append(withdrawal_hold_reason)

        # Sock puppets: each login (and signup, which logs in) records the address and device.
        from django.contrib.auth.signals import user_logged_in

        from accounts.middleware import record_login_links, record_login_session

        user_logged_in.connect(record_login_links, dispatch_uid="accounts.record_login_links")
        # The settings page lists each logged-in browser from its login on.
        user_logged_in.connect(record_login_session, dispatch_uid="accounts.record_login_session")

        # A user deactivated (or their password hash changed) from anywhere, the admin included:
        # their cached credential look-ups go at once (accounts.authentication).
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save

        from accounts.services import auth_cache_forget

        def forget_credentials(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
            fields = kwargs.get("update_fields")
            if created or (fields is not None and set(fields) <= {"last_login"}):
                return
            auth_cache_forget(user_id=instance.pk)

        post_save.connect(
            forget_credentials,
            sender=get_user_model(),
            weak=False,
            dispatch_uid="accounts.forget_credentials",
        )
