"""The proof of reserves in the REST API: /api/v1/reserves/ (docs/chain.md "Reserves")."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ERRORS, ApiView, ErrorSerializer
from ledger.evm import reserves


class AddressOut(serializers.Serializer[dict[str, Any]]):
    address = serializers.CharField(help_text="EIP-55")
    balance = serializers.CharField()


class ReserveProofOut(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    type = serializers.CharField()
    v = serializers.IntegerField()
    asset = serializers.CharField()
    precision = serializers.IntegerField()
    chain = serializers.CharField()
    block_number = serializers.IntegerField()
    block_hash = serializers.CharField()
    addresses = AddressOut(many=True)
    onchain_total = serializers.CharField()
    liabilities_root = serializers.CharField(help_text="The Merkle sum tree's root hash, hex.")
    liabilities_total = serializers.CharField(help_text="The root's sum: everything owed.")
    leaf_count = serializers.IntegerField()
    timestamp = serializers.CharField()
    key_id = serializers.CharField()
    signature = serializers.CharField(
        help_text="Ed25519 over the other fields but id as sorted-key compact JSON."
    )


class LeafOut(serializers.Serializer[dict[str, Any]]):
    account = serializers.CharField()
    asset = serializers.CharField()
    balance = serializers.CharField()
    nonce = serializers.CharField()


class PathStepOut(serializers.Serializer[dict[str, Any]]):
    side = serializers.ChoiceField(choices=["left", "right"])
    hash = serializers.CharField()
    sum = serializers.CharField(help_text="The sibling's sum.")
    node_sum = serializers.CharField(help_text="The sum of the node above: yours + the sibling's.")


class ReserveInclusionOut(serializers.Serializer[dict[str, Any]]):
    reserves = ReserveProofOut()
    leaf = LeafOut()
    leaf_hash = serializers.CharField()
    index = serializers.IntegerField()
    path = PathStepOut(many=True)


class ReserveProofListApi(ApiView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="reserves_list",
        responses={
            200: inline_serializer("ReserveProofList", {"results": ReserveProofOut(many=True)}),
            429: ErrorSerializer,
        },
        description="The latest signed proof of reserves of each asset on the chain.",
    )
    def get(self, request: Request) -> Response:
        return Response(
            {"results": [reserves.proof_out(p) for p in reserves.reserve_proofs_latest()]}
        )


class ReserveProofDetailApi(ApiView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="reserves_detail",
        responses={200: ReserveProofOut, 404: ErrorSerializer, 429: ErrorSerializer},
        description="One published proof of reserves.",
    )
    def get(self, request: Request, proof_id: int) -> Response:
        return Response(reserves.proof_out(reserves.reserve_proof_get(proof_id=proof_id)))


class ReserveInclusionProofApi(ApiView):
    @extend_schema(
        operation_id="reserves_inclusion_proof",
        responses={200: ReserveInclusionOut, **ERRORS},
        description="Your leaf in a proof of reserves (account, balance, nonce) and the path of "
        "sibling hashes and sums to its signed root; check it offline with "
        "`python -m ledger.verify reserves proof.json --keys keys.json`. 404 when you held "
        "nothing of the asset then.",
    )
    def get(self, request: Request, proof_id: int) -> Response:
        return Response(reserves.reserves_inclusion_proof(proof_id=proof_id, user=request.user))
