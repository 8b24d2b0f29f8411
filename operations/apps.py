from django.apps import AppConfig


class OperationsConfig(AppConfig):
    """What an operator watches: health and readiness, the Prometheus figures, JSON logs with a
    request id that follows the work into Celery. The top layer: it reads every app's tables and
    no app imports it (docs/architecture.md §1, §6.3)."""

    name = "operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from operations import context

        context.connect_celery_signals()
