from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # Trade events reach in-app notifications, email and webhooks through the escrow
        # state machine's on-commit listeners; failed settlements through the settlement ones.
        # issue 17: the parties' settings cached in Redis, forgotten by every writer.
        from notifications import (
            listeners,  # noqa: F401
            recipients,  # noqa: F401
        )

        # issue 18: the same news to browsers and bots over WebSockets (after the above).
        from notifications.live import listeners as live_listeners  # noqa: F401
