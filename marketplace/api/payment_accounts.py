"""/api/v1/payment-accounts/: the caller's saved payment accounts (marketplace.services.
payment_accounts holds the rules)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ERRORS, ApiView, paginated
from common.idempotency import idempotent
from marketplace import selectors
from marketplace.models import PaymentAccount
from marketplace.payment_catalog import METHOD_FIELDS
from marketplace.payment_fields import GENERIC, display, fields_for
from marketplace.services import payment_accounts as services


def _fields_text() -> str:
    """The table of each method's fields, for the schema's description."""
    lines = []
    for code, spec in [*METHOD_FIELDS.items(), ("any other method", GENERIC)]:
        keys = ", ".join(f.key + ("" if f.required else " (optional)") for f in spec.fields)
        either = f"; at least one of {' or '.join(spec.one_of)}" if spec.one_of else ""
        lines.append(f"- `{code}`: {keys}{either}")
    return "\n".join(lines)


class PaymentAccountOut(serializers.Serializer[PaymentAccount]):
    id = serializers.IntegerField()
    method = serializers.CharField(source="method.code")
    method_name = serializers.CharField(source="method.name")
    label = serializers.CharField()  # type: ignore[assignment]  # a field named `label`
    details = serializers.DictField(
        child=serializers.CharField(),
        help_text=gettext_lazy("{field key: the stored, normalised value}"),
    )
    display = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_display(self, account: PaymentAccount) -> list[dict[str, str]]:
        """The fields in the method's order, labelled, as they read (an IBAN in groups)."""
        return [
            {
                "key": f.key,
                "label": str(f.label),
                "display": display(f.kind, account.details[f.key]),
            }
            for f in fields_for(account.method.code).fields
            if account.details.get(f.key)
        ]


class PaymentAccountInput(serializers.Serializer[dict[str, Any]]):
    method = serializers.CharField(
        max_length=32, help_text=gettext_lazy("A payment method's code, e.g. sepa.")
    )
    label = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")  # type: ignore[assignment]  # a field named `label`
    details = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=300),
        help_text=gettext_lazy("The method's fields by key (see the list above)."),
    )


class PaymentAccountPatchInput(serializers.Serializer[dict[str, Any]]):
    label = serializers.CharField(max_length=64, required=False, allow_blank=True)  # type: ignore[assignment]  # a field named `label`
    details = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=300),
        required=False,
        help_text=gettext_lazy("The fields to change; an empty optional one is removed."),
    )


EXAMPLES = [
    OpenApiExample(
        "SEPA",
        value={
            "method": "sepa",
            "label": "Main bank",
            "details": {
                "holder_name": "Alice Martin",
                "iban": "DE89 3704 0044 0532 0130 00",
                "bic": "COBADEFFXXX",
            },
        },
        request_only=True,
    ),
    OpenApiExample(
        "Revolut",
        value={
            "method": "revolut",
            "details": {"holder_name": "Alice Martin", "revtag": "@alicem"},
        },
        request_only=True,
    ),
]


class PaymentAccountListApi(ApiView):
    ordering = ("-created_at", "-id")

    @extend_schema(
        operation_id="payment_accounts_list",
        responses={200: paginated(PaymentAccountOut), **ERRORS},
        description="Your saved payment accounts.",
    )
    def get(self, request: Request) -> Response:
        return self.paginate(
            selectors.payment_account_list_for_user(user=request.user), PaymentAccountOut
        )

    @extend_schema(
        operation_id="payment_accounts_create",
        request=PaymentAccountInput,
        responses={201: PaymentAccountOut, **ERRORS},
        examples=EXAMPLES,
        description=(
            "Save an account you receive fiat on. Each payment method has its fields:\n\n"
            + _fields_text()
            + "\n\nIBANs are checked by their check digits, BICs, emails and phone numbers "
            "(international, +country code) by format. When your identity is verified, "
            "holder_name must be your verified name (case, accents and spacing aside). A 400 "
            "names each bad field. A sell offer names these accounts (`payment_accounts`); a "
            "trade copies the one it uses when it opens."
        ),
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = PaymentAccountInput(data=request.data)
        data.is_valid(raise_exception=True)
        account = services.payment_account_create(user=request.user, **data.validated_data)
        account = selectors.payment_account_get_for_user(account_id=account.pk, user=request.user)
        return Response(PaymentAccountOut(account).data, status=status.HTTP_201_CREATED)


class PaymentAccountDetailApi(ApiView):
    @extend_schema(
        operation_id="payment_accounts_retrieve", responses={200: PaymentAccountOut, **ERRORS}
    )
    def get(self, request: Request, account_id: int) -> Response:
        account = selectors.payment_account_get_for_user(account_id=account_id, user=request.user)
        return Response(PaymentAccountOut(account).data)

    @extend_schema(
        operation_id="payment_accounts_update",
        request=PaymentAccountPatchInput,
        responses={200: PaymentAccountOut, **ERRORS},
        examples=[
            OpenApiExample(
                "New IBAN", value={"details": {"iban": "GB82WEST12345698765432"}}, request_only=True
            )
        ],
        description="Change an account's fields or label. Open trades keep the copy they made.",
    )
    def patch(self, request: Request, account_id: int) -> Response:
        data = PaymentAccountPatchInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.payment_account_update(
            account_id=account_id, actor=request.user, **data.validated_data
        )
        account = selectors.payment_account_get_for_user(account_id=account_id, user=request.user)
        return Response(PaymentAccountOut(account).data)

    @extend_schema(
        operation_id="payment_accounts_destroy",
        responses={204: None, **ERRORS},
        description="Delete an account: offers stop naming it; open trades keep their copy.",
    )
    def delete(self, request: Request, account_id: int) -> Response:
        services.payment_account_delete(account_id=account_id, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
