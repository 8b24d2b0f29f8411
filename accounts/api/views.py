from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import services
from accounts.models import ApiKey
from common.api import ApiView, ErrorSerializer, IpRateThrottle, paginated
from common.errors import ApplicationError
from common.idempotency import idempotent

ERRORS = {
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
    429: ErrorSerializer,
}


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
            err = ApplicationError("Wrong username or password.", code="invalid_credentials")
            err.status = 401
            raise err
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
    key = serializers.CharField(help_text="Shown once; store it now.")


class ApiKeyListApi(ApiView):
    class Input(serializers.Serializer):
        class Meta:
            ref_name = "KeyListInput"

        name = serializers.CharField(max_length=64)
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=ApiKey.Scope.choices), min_length=1
        )

    @extend_schema(operation_id="api_keys_list", responses={200: paginated(ApiKeyOut), **ERRORS})
    def get(self, request: Request) -> Response:
        return self.paginate(ApiKey.objects.filter(user=request.user), ApiKeyOut)

    @extend_schema(
        operation_id="api_keys_create",
        request=Input,
        responses={201: ApiKeyCreatedOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Trading bot",
                value={"name": "grid bot", "scopes": ["read", "trade"]},
                request_only=True,
            )
        ],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        if getattr(request.auth, "scopes", None) is not None:
            raise ApplicationError(
                "API keys can't create keys; use your account token or the profile page.",
                code="forbidden",
            )
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = services.api_key_create(user=request.user, **data.validated_data)
        out = ApiKeyCreatedOut({**ApiKeyOut(key).data, "key": raw}).data
        return Response(out, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(ApiView):
    @extend_schema(operation_id="api_keys_revoke", responses={204: None, **ERRORS})
    def delete(self, request: Request, key_id: int) -> Response:
        services.api_key_revoke(user=request.user, key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
