from __future__ import annotations

from typing import cast

from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext, gettext_lazy
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors, services
from accounts.models import ApiKey, KycDocument, TraderRelation
from common.api import ERRORS, ApiView, FundsConfirmInput, IpRateThrottle, otp_from, paginated
from common.errors import ApplicationError, ValidationFailed
from common.http import client_ip
from common.idempotency import idempotent
from common.permissions import AccountCredentialForWrites, HasScope

ERRORS_409 = ERRORS  # KYC documents and relations also answer 409 (a document in the wrong state)


class AuthThrottle(IpRateThrottle):
    scope = "auth"


class TokenObtainApi(ApiView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [AuthThrottle]

    class Input(serializers.Serializer):
        class Meta:
            ref_name = "TokenObtainInput"

        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"})

    @extend_schema(
        operation_id="auth_token",
        request=Input,
        responses={
            200: inline_serializer("TokenOut", {"token": serializers.CharField()}),
            **ERRORS,
        },
        examples=[
            OpenApiExample(
                "Log in",
                value={"username": "alice", "password": "demo-pass-123"},
                request_only=True,
            )
        ],
        description="Exchange a username and password for the account token: `Authorization: Token <token>`.",
    )
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request._request, **data.validated_data)
        if user is None:
            err = ApplicationError(
                gettext("Wrong username or password."), code="invalid_credentials"
            )
            err.status = 401
            raise err
        # No session login, so no user_logged_in: the address is recorded here (account links).
        # Not the device: bots keep no cookies, each request would look like a new device.
        services.account_links_record(user=user, ip=client_ip(request), device=None)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class ApiKeyOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class ApiKeyCreatedOut(ApiKeyOut):
    key = serializers.CharField(
        allow_null=True,
        help_text=gettext_lazy(
            "Shown once; store it now. null in an Idempotency-Key replay, which has "
            "secret_shown_once: true instead."
        ),
    )
    secret_shown_once = serializers.BooleanField(
        required=False,
        help_text=gettext_lazy("Only in an Idempotency-Key replay: the key is not repeated."),
    )


class ApiKeyListApi(ApiView):
    permission_classes = [HasScope, AccountCredentialForWrites]

    class Input(FundsConfirmInput):
        class Meta:
            ref_name = "KeyListInput"

        name = serializers.CharField(max_length=64)
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=ApiKey.Scope.choices), min_length=1
        )

    @extend_schema(operation_id="api_keys_list", responses={200: paginated(ApiKeyOut), **ERRORS})
    def get(self, request: Request) -> Response:
        return self.paginate(ApiKey.objects.filter(user=cast(User, request.user)), ApiKeyOut)

    @extend_schema(
        operation_id="api_keys_create",
        request=Input,
        description="A new key with its scopes; the raw key is in this answer only. Confirm with "
        "the fund password: `otp` (the 2FA code) once 2FA is on, else `password` (the account "
        "password); a missing or wrong one is refused (403 `otp_required`, `otp_invalid`, "
        "`password_required`, `password_invalid`; 429 `funds_locked`) and no key is made.",
        responses={201: ApiKeyCreatedOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Trading bot",
                value={"name": "grid bot", "scopes": ["read", "trade"], "password": "…"},
                request_only=True,
            )
        ],
    )
    @idempotent(secret_fields=("key",))
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        services.funds_confirm(
            user=request.user,
            otp=otp_from(request),
            password=data.validated_data.get("password"),
        )
        key, raw = services.api_key_create(
            user=request.user,
            name=data.validated_data["name"],
            scopes=data.validated_data["scopes"],
        )
        out = ApiKeyCreatedOut({**ApiKeyOut(key).data, "key": raw}).data
        return Response(out, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(ApiView):
    permission_classes = [HasScope, AccountCredentialForWrites]

    @extend_schema(operation_id="api_keys_revoke", responses={204: None, **ERRORS})
    def delete(self, request: Request, key_id: int) -> Response:
        services.api_key_revoke(user=request.user, key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- KYC documents ----------------------------------------------------------------------------


def _choice_input(choices: type[models.TextChoices]) -> serializers.ChoiceField:
    """An input choice field written in the schema as a pattern, not an enum: the output
    serializer holds the named enum, and a `kind` enum shared by two components would get a
    hashed name (several resources have a `kind`)."""
    values = list(choices.values)

    @extend_schema_field(
        {
            "type": "string",
            "pattern": "^(" + "|".join(values) + ")$",
            "description": "One of: " + ", ".join(values) + ".",
        }
    )
    class Field(serializers.ChoiceField):
        pass

    return Field(choices=choices.choices)


class KycDocumentOut(serializers.Serializer):
    class Meta:
        ref_name = "KycDocumentOut"

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=KycDocument.Kind.choices)
    requested_tier = serializers.IntegerField()
    status = serializers.ChoiceField(choices=KycDocument.Status.choices)
    review_reason = serializers.CharField()
    content_type = serializers.CharField()
    file_url = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    reviewed_at = serializers.DateTimeField(allow_null=True)

    def get_file_url(self, document: KycDocument) -> str:
        """The checked download (owner and reviewers only)."""
        return reverse("kyc_file", args=[document.pk])


class KycDocumentListApi(ApiView):
    parser_classes = [MultiPartParser, FormParser]
    ordering = ("-created_at", "-id")

    class Input(serializers.Serializer):
        class Meta:
            ref_name = "KycDocumentInput"

        kind = _choice_input(KycDocument.Kind)
        requested_tier = serializers.ChoiceField(choices=[1, 2])
        file = serializers.FileField(
            help_text=gettext_lazy("PNG, JPEG, WebP or PDF; checked by content.")
        )

    @extend_schema(
        operation_id="kyc_documents_list",
        responses={200: paginated(KycDocumentOut), **ERRORS_409},
        description="Your KYC documents and their review status. Never visible to other traders.",
    )
    def get(self, request: Request) -> Response:
        return self.paginate(
            selectors.kyc_document_list_for_user(user=request.user), KycDocumentOut
        )

    @extend_schema(
        operation_id="kyc_documents_create",
        request={"multipart/form-data": Input},
        responses={201: KycDocumentOut, **ERRORS_409},
        examples=[
            OpenApiExample(
                "Passport for tier 1",
                value={"kind": "passport", "requested_tier": 1, "file": "(binary)"},
                request_only=True,
            ),
            OpenApiExample(
                "Bad file type",
                value={
                    "error": {
                        "code": "invalid",
                        "message": "file: only JPEG, PDF, PNG, WEBP files are accepted.",
                        "fields": {"file": ["Only JPEG, PDF, PNG, WEBP."]},
                    }
                },
                response_only=True,
                status_codes=["400"],
            ),
        ],
        description="Send a document for review towards tier 1 or 2 (multipart/form-data).",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        document = services.kyc_document_submit(user=request.user, **data.validated_data)
        return Response(KycDocumentOut(document).data, status=status.HTTP_201_CREATED)


class KycDocumentDetailApi(ApiView):
    @extend_schema(
        operation_id="kyc_documents_destroy",
        responses={204: None, **ERRORS_409},
        description="Delete one of your rejected documents (409 for pending or approved ones).",
    )
    def delete(self, request: Request, document_id: int) -> Response:
        services.kyc_document_delete(document_id=document_id, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- trusted and blocked lists ----------------------------------------------------------------


class RelationOut(serializers.Serializer):
    class Meta:
        ref_name = "TraderRelationOut"

    id = serializers.IntegerField()
    username = serializers.CharField(source="other.username")
    kind = serializers.ChoiceField(choices=TraderRelation.Kind.choices)
    created_at = serializers.DateTimeField()


class RelationListApi(ApiView):
    ordering = ("-created_at", "-id")

    class Input(serializers.Serializer):
        class Meta:
            ref_name = "TraderRelationInput"

        username = serializers.CharField(max_length=150)
        kind = _choice_input(TraderRelation.Kind)

    @extend_schema(
        operation_id="relations_list",
        parameters=[OpenApiParameter("kind", str, enum=TraderRelation.Kind.values)],
        responses={200: paginated(RelationOut), **ERRORS_409},
        description="Your trusted and blocked traders.",
    )
    def get(self, request: Request) -> Response:
        kind = request.query_params.get("kind") or None
        if kind and kind not in TraderRelation.Kind.values:
            raise ValidationFailed(
                gettext("kind: unknown kind {kind!r}.").format(kind=kind),
                fields={"kind": [gettext("trusted or blocked.")]},
            )
        qs = TraderRelation.objects.filter(owner=cast(User, request.user)).select_related("other")
        if kind:
            qs = qs.filter(kind=kind)
        return self.paginate(qs, RelationOut)

    @extend_schema(
        operation_id="relations_create",
        request=Input,
        responses={201: RelationOut, **ERRORS_409},
        examples=[
            OpenApiExample(
                "Trust a trader", value={"username": "bob", "kind": "trusted"}, request_only=True
            ),
            OpenApiExample(
                "Block a trader",
                value={"username": "mallory", "kind": "blocked"},
                request_only=True,
            ),
        ],
        description=(
            "Trust a trader (they may take your trusted-only offers) or block one (neither of you "
            "sees the other's offers). A second call for the same trader replaces the first."
        ),
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        relation = services.trader_relation_add(actor=request.user, **data.validated_data)
        return Response(RelationOut(relation).data, status=status.HTTP_201_CREATED)


class RelationDetailApi(ApiView):
    @extend_schema(operation_id="relations_destroy", responses={204: None, **ERRORS_409})
    def delete(self, request: Request, relation_id: int) -> Response:
        services.trader_relation_remove(actor=request.user, relation_id=relation_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
