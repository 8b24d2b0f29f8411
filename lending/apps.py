from django.apps import AppConfig


class LendingConfig(AppConfig):
    name = "lending"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The LTV is rechecked whenever a price index moves (docs/architecture.md §1, hooks).
        from lending.listeners import on_price_moved
        from marketplace.services import price_listeners

        if on_price_moved not in price_listeners:
            price_listeners.append(on_price_moved)
