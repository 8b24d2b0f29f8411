from __future__ import annotations

from typing import Any, Literal, overload

from django.utils.translation import gettext, gettext_lazy
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import (
    ERRORS,
    AmountInput,
    ApiView,
    ErrorSerializer,
    FundsConfirmInput,
    otp_from,
    paginated,
)
from common.db import replica_reads
from common.errors import NotFound, ValidationFailed
from common.idempotency import idempotent
from common.money import fmt
from ledger import selectors, services
from ledger.models import Transfer, Withdrawal


class WalletOut(serializers.Serializer[Any]):
    asset = serializers.CharField()
    precision = serializers.IntegerField()
    available = serializers.CharField()
    escrow = serializers.CharField()
    pending_withdrawal = serializers.CharField()
    withdrawal_fee = serializers.CharField(
        allow_null=True,
        help_text=gettext_lazy(
            "The network fee a withdrawal costs now, in the asset (held with the amount; "
            "send it back as max_fee). null: it can't be quoted right now."
        ),
    )


class WalletListApi(ApiView):
    @extend_schema(
        operation_id="wallets_list",
        responses={
            200: inline_serializer("WalletList", {"results": WalletOut(many=True)}),
            **ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        wallets = selectors.wallet_list_for_user(user=request.user)
        fees = selectors.withdrawal_fee_quotes(assets=[w.asset for w in wallets])
        rows = [
            {
                "asset": w.asset.code,
                "precision": w.asset.precision,
                "available": fmt(w.available, w.asset.precision),
                "escrow": fmt(w.escrow, w.asset.precision),
                "pending_withdrawal": fmt(w.pending_withdrawal, w.asset.precision),
                "withdrawal_fee": (
                    None if (fee := fees.get(w.asset.code)) is None else fmt(fee, w.asset.precision)
                ),
            }
            for w in wallets
        ]
        return Response({"results": WalletOut(rows, many=True).data})


class WithdrawalOut(serializers.Serializer[Withdrawal]):
    id = serializers.IntegerField()
    asset = serializers.CharField(source="asset.code")
    amount = serializers.SerializerMethodField()
    fee = serializers.SerializerMethodField(
        help_text=gettext_lazy("The network fee, held with the amount.")
    )
    address = serializers.CharField()
    status = serializers.ChoiceField(choices=Withdrawal.Status.choices)
    txid = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_amount(self, w: Withdrawal) -> str:
        return fmt(w.amount, w.asset.precision)

    def get_fee(self, w: Withdrawal) -> str:
        return fmt(w.fee, w.asset.precision)


class WithdrawalCreateApi(ApiView):
    write_scope = "withdraw"

    class Input(FundsConfirmInput):
        class Meta:
            ref_name = "WithdrawalCreateInput"

        amount = AmountInput()
        address = serializers.CharField(max_length=128)
        max_fee = AmountInput(
            required=False,
            help_text=gettext_lazy(
                "The network fee you were shown (GET /wallets/: withdrawal_fee): a "
                "higher one now is refused (400, field max_fee) and nothing is held."
            ),
        )

    @extend_schema(
        operation_id="withdrawals_create",
        request=Input,
        responses={201: WithdrawalOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Withdraw",
                value={"amount": "0.01", "address": "bc1qexampleaddress", "password": "…"},
                request_only=True,
            )
        ],
        description="The amount is held at once, with the network fee (`fee`: on the chain, the "
        "estimated gas; 0 for a manual asset); a worker hands it to the chain adapter. Needs the "
        "`withdraw` scope, and the fund password: `otp` (the 2FA code) once 2FA is on, else "
        "`password` (the account password); a missing or wrong one is refused (403 "
        "`otp_required`, `otp_invalid`, `password_required`, `password_invalid`; 429 "
        "`funds_locked` after too many wrong ones) and nothing is held.",
    )
    @idempotent
    def post(self, request: Request, asset: str) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        services.withdrawal_owner_confirm(
            user=request.user,
            otp=otp_from(request),
            password=data.validated_data.get("password"),
        )
        withdrawal = services.withdrawal_request(
            user=request.user,
            asset_code=asset,
            amount=data.validated_data["amount"],
            address=data.validated_data["address"],
            max_fee=data.validated_data.get("max_fee"),
        )
        withdrawal = Withdrawal.objects.select_related("asset").get(pk=withdrawal.pk)
        return Response(WithdrawalOut(withdrawal).data, status=status.HTTP_201_CREATED)


class TransferOut(serializers.Serializer[Transfer]):
    id = serializers.IntegerField()
    asset = serializers.CharField(source="asset.code")
    amount = serializers.SerializerMethodField()
    debit = serializers.CharField(source="debit_account.code")
    credit = serializers.CharField(source="credit_account.code")
    kind = serializers.ChoiceField(choices=Transfer.Kind.choices)
    flags = serializers.ChoiceField(choices=Transfer.Flags.choices)
    pending_id = serializers.IntegerField(allow_null=True)
    trade = serializers.IntegerField(source="trade_id", allow_null=True)
    reference = serializers.IntegerField(
        allow_null=True,
        help_text=gettext_lazy("What it belongs to, e.g. a loan's id for the loan_* kinds."),
    )
    seq = serializers.IntegerField(allow_null=True)
    hash = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()

    def get_amount(self, t: Transfer) -> str:
        return fmt(t.amount, t.asset.precision)


class TransferListApi(ApiView):
    @extend_schema(
        operation_id="transfers_list",
        parameters=[
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int),
            OpenApiParameter("kind", str, description="Only this kind, e.g. loan_installment."),
            OpenApiParameter(
                "reference", int, description="Only those of this reference, e.g. a loan's id."
            ),
        ],
        responses={200: paginated(TransferOut), **ERRORS},
        description="Your ledger transfers, newest first, with their chain seq and hash once "
        "sealed. A lender lists what a loan paid them with `?kind=loan_installment&reference="
        "<loan id>` and proves each one from a signed checkpoint (`/ledger/entries/{seq}/proof/`).",
    )
    def get(self, request: Request) -> Response:
        kind = request.query_params.get("kind") or None
        if kind is not None and kind not in Transfer.Kind.values:
            raise ValidationFailed.for_field(
                "kind", gettext("One of: {v1}.").format(v1=", ".join(Transfer.Kind.values))
            )
        reference = _int_param(request, "reference", required=False)
        rows = selectors.transfer_list_for_user(user=request.user, kind=kind, reference=reference)
        return self.paginate(rows, TransferOut)


# --- the verifiable ledger ----------------------------------------------------------------------


class CheckpointOut(serializers.Serializer[dict[str, Any]]):
    tree_size = serializers.IntegerField()
    root_hash = serializers.CharField()
    chain_head = serializers.CharField()
    timestamp = serializers.CharField()
    key_id = serializers.CharField()
    signature = serializers.CharField()


class ProofOut(serializers.Serializer[dict[str, Any]]):
    seq = serializers.IntegerField()
    leaf_index = serializers.IntegerField()
    leaf = serializers.CharField(help_text=gettext_lazy("The entry's canonical bytes, hex."))
    leaf_hash = serializers.CharField()
    tree_size = serializers.IntegerField()
    path = serializers.ListField(child=serializers.CharField())
    checkpoint = CheckpointOut()


class ConsistencyOut(serializers.Serializer[dict[str, Any]]):
    first = serializers.IntegerField()
    second = serializers.IntegerField()
    first_root = serializers.CharField()
    second_root = serializers.CharField()
    path = serializers.ListField(child=serializers.CharField())


class PublicKeyOut(serializers.Serializer[dict[str, Any]]):
    key_id = serializers.CharField()
    public_key = serializers.CharField(
        help_text=gettext_lazy("Raw 32-byte Ed25519 public key, hex.")
    )


@overload
def _int_param(request: Request, name: str, *, required: Literal[True]) -> int: ...
@overload
def _int_param(request: Request, name: str, *, required: bool) -> int | None: ...
def _int_param(request: Request, name: str, *, required: bool) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise ValidationFailed(
                gettext("{name}: required.").format(name=name),
                fields={name: [gettext("Required.")]},
            )
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValidationFailed(
            gettext("{name}: a positive whole number.").format(name=name),
            fields={name: [gettext("A positive whole number.")]},
        )
    return int(raw)


class CheckpointLatestApi(ApiView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="ledger_checkpoint_latest",
        responses={200: CheckpointOut, 404: ErrorSerializer, 429: ErrorSerializer},
        description="The latest signed tree head. Its signature covers the other fields as sorted-key compact JSON.",
    )
    def get(self, request: Request) -> Response:
        checkpoint = selectors.checkpoint_latest()
        if checkpoint is None:
            raise NotFound(gettext("No checkpoint has been signed yet."))
        return Response(selectors.checkpoint_out(checkpoint))


class InclusionProofApi(ApiView):
    @extend_schema(
        operation_id="ledger_entry_proof",
        parameters=[
            OpenApiParameter(
                "tree_size", int, description="A checkpoint's size (default: the latest)."
            )
        ],
        responses={200: ProofOut, **ERRORS},
        description="RFC 9162 inclusion proof of one of your entries against a signed checkpoint.",
    )
    @replica_reads
    def get(self, request: Request, seq: int) -> Response:
        tree_size = _int_param(request, "tree_size", required=False)
        return Response(selectors.inclusion_proof(seq=seq, tree_size=tree_size, user=request.user))


class ConsistencyProofApi(ApiView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="ledger_consistency",
        parameters=[
            OpenApiParameter("first", int, required=True),
            OpenApiParameter("second", int, required=True),
        ],
        responses={200: ConsistencyOut, 400: ErrorSerializer, 429: ErrorSerializer},
        description="RFC 9162 consistency proof: the tree of `second` entries extends the tree of `first`.",
    )
    @replica_reads
    def get(self, request: Request) -> Response:
        first = _int_param(request, "first", required=True)
        second = _int_param(request, "second", required=True)
        return Response(selectors.consistency_proof(first=first, second=second))


class PublicKeyApi(ApiView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="ledger_public_keys",
        responses={200: inline_serializer("PublicKeys", {"keys": PublicKeyOut(many=True)})},
        description="Every key that signed checkpoints, old ones included (they stay valid after a rotation).",
    )
    def get(self, request: Request) -> Response:
        return Response({"keys": selectors.public_keys()})
