"""Deposits on the chain for bots: the user's deposit address per asset and their chain deposits
with confirmations (the wallet page shows the same, from the same selectors)."""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ERRORS, ApiView, paginated
from common.money import fmt
from ledger.adapters import get_chain_adapter
from ledger.evm.config import confirmations_required
from ledger.evm.deposits import chain_tip_number, deposit_target_for
from ledger.models import ChainDeposit
from ledger.selectors import asset_get


class DepositAddressOut(serializers.Serializer[dict[str, Any]]):
    asset = serializers.CharField()
    chain = serializers.CharField(allow_null=True, help_text="null: deposits are manual")
    address = serializers.CharField(allow_null=True, help_text="EIP-55 checksummed")
    contract = serializers.CharField(
        allow_null=True, help_text="The token's ERC-20 contract; null for the native coin"
    )
    confirmations_required = serializers.IntegerField(allow_null=True)
    instructions = serializers.CharField()


class DepositAddressApi(ApiView):
    @extend_schema(
        operation_id="wallets_deposit_address",
        responses={200: DepositAddressOut, **ERRORS},
        description="Where to send an asset to deposit it: on the chain, your own address (the "
        "same for ETH and the tokens), the token's contract and the confirmations after which "
        "it is credited; for an asset without a chain node (BTC), `address` is null and "
        "`instructions` say how deposits are made.",
    )
    def get(self, request: Request, asset: str) -> Response:
        found = asset_get(code=asset)
        target = deposit_target_for(user=request.user, asset_code=found.code)
        instructions = get_chain_adapter(found).deposit_instructions(
            user_id=cast(int, request.user.pk), asset=found
        )
        return Response(
            DepositAddressOut(
                {
                    "asset": found.code,
                    "chain": target.chain if target else None,
                    "address": target.address if target else None,
                    "contract": (target.contract or None) if target else None,
                    "confirmations_required": target.confirmations_required if target else None,
                    "instructions": instructions,
                }
            ).data
        )


class ChainDepositOut(serializers.Serializer[ChainDeposit]):
    id = serializers.IntegerField()
    asset = serializers.CharField(source="asset.code")
    amount = serializers.SerializerMethodField()
    address = serializers.CharField()
    tx_hash = serializers.CharField()
    log_index = serializers.IntegerField(help_text="-1 for a native transfer")
    block_number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ChainDeposit.Status.choices)
    confirmations = serializers.SerializerMethodField()
    confirmations_required = serializers.SerializerMethodField()
    note = serializers.CharField()
    seen_at = serializers.DateTimeField()
    credited_at = serializers.DateTimeField(allow_null=True)

    def get_amount(self, d: ChainDeposit) -> str:
        return fmt(d.amount, d.asset.precision)

    def get_confirmations(self, d: ChainDeposit) -> int:
        required: int = self.context["required"]
        tip: int | None = self.context["tip"]
        if d.status == ChainDeposit.Status.CREDITED:
            return required
        if d.status != ChainDeposit.Status.SEEN or tip is None:
            return 0
        return max(0, min(required, tip - d.block_number + 1))

    def get_confirmations_required(self, d: ChainDeposit) -> int:
        required: int = self.context["required"]
        return required


class ChainDepositListApi(ApiView):
    ordering = "-pk"

    @extend_schema(
        operation_id="deposits_list",
        responses={200: paginated(ChainDepositOut), **ERRORS},
        description="Your deposits found on the chain, newest first: `seen` (with its "
        "confirmations so far), `credited` (after `confirmations_required`), `dropped` (its "
        "block left the chain before it was credited) or `ignored` (nothing to credit at the "
        "asset's precision; `note` says why).",
    )
    def get(self, request: Request) -> Response:
        rows = ChainDeposit.objects.filter(user_id=cast(int, request.user.pk)).select_related(
            "asset"
        )
        return self.paginate(
            rows, ChainDepositOut, tip=chain_tip_number(), required=confirmations_required()
        )
