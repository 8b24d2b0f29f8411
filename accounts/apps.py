from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Money leaves only with the owner's second factor (when 2FA is on): the ledger, a layer
        # below, asks its registered guards before it holds a withdrawal.
        from accounts.services import require_second_factor
        from ledger.services import funds

        if require_second_factor not in funds.withdrawal_guards:
            funds.withdrawal_guards.append(require_second_factor)
