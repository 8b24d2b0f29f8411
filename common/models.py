from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils.translation import gettext_lazy


class IdempotencyRecord(models.Model):
    """The first response to a POST sent with an Idempotency-Key, replayed for a retry until
    IDEMPOTENCY_TTL_HOURS have passed. Secrets in the response (a raw API key, a webhook
    secret) are never stored: the body is redacted first."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(
        max_length=64, help_text=gettext_lazy("SHA-256 of method, path and body")
    )
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    # Set in the service's own transaction (common.transactions.durable_atomic): the work is
    # done even if no response was ever recorded.
    committed = models.BooleanField(default=False)
    # The scopes of the credential that sent the first request (common.permissions.scopes_of):
    # a replay goes only to a credential holding every one of them.
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="one_record_per_user_key")
        ]
        # idempotency_records_prune deletes by age.
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_at")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"
