from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # Trade events reach in-app notifications, email and webhooks through the escrow
        # state machine's on-commit listeners; failed settlements through the settlement ones.
        from notifications import listeners  # noqa: F401
