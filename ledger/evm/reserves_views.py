"""The public proof of reserves page and its downloads (the browser UI). Thin: each view reads
through ledger.evm.reserves and checks with the offline verifier's own code."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from common.errors import ApplicationError, NotFound
from ledger import selectors as ledger_selectors
from ledger.evm import reserves
from ledger.evm.models import ReserveLeaf, ReserveProof

HISTORY = 20


def _checked(proof: ReserveProof, keys: dict[str, str]) -> dict[str, Any]:
    """A proof as the page shows it, with what the verifier says of it."""
    from ledger.verify import VerificationError, verify_reserves_publication

    published = reserves.proof_out(proof)
    row: dict[str, Any] = {"proof": proof, "published": published, "verified": True, "error": ""}
    try:
        verify_reserves_publication(published, keys)
    except VerificationError as exc:
        row["verified"], row["error"] = False, str(exc)
    if proof.liabilities_total:
        row["coverage"] = proof.onchain_total / proof.liabilities_total * 100
    return row


@require_GET
def reserves_page(request: HttpRequest) -> HttpResponse:
    """The latest signed proof of reserves of each asset on the chain, checked here with the
    offline verifier's code; a logged-in user downloads their own inclusion proof."""
    from ledger.verify import load_keys

    keys = load_keys({"keys": ledger_selectors.public_keys()})
    latest = [_checked(p, keys) for p in reserves.reserve_proofs_latest()]
    mine: set[int] = set()
    if request.user.is_authenticated:
        mine = set(
            ReserveLeaf.objects.filter(
                user=request.user, proof__in=[row["proof"] for row in latest]
            ).values_list("proof_id", flat=True)
        )
    for row in latest:
        row["mine"] = row["proof"].pk in mine
        row["published_json"] = json.dumps(row["published"], indent=2)
    history = ReserveProof.objects.select_related("asset").order_by("-created_at", "-id")[:HISTORY]
    return render(
        request,
        "ledger/reserves.html",
        {"latest": latest, "history": history},
    )


@require_GET
def reserves_published_json(request: HttpRequest, proof_id: int) -> HttpResponse:
    """A published proof of reserves as a JSON file (what `--published` of the verifier reads)."""
    try:
        proof = reserves.reserve_proof_get(proof_id=proof_id)
    except NotFound as exc:
        raise Http404(exc.message) from None
    return _attachment(reserves.proof_out(proof), f"reserves-{proof.asset.code}-{proof.pk}.json")


@login_required
@require_GET
def reserves_my_proof(request: HttpRequest, proof_id: int) -> HttpResponse:
    """The logged-in user's inclusion proof in a proof of reserves, as a JSON file."""
    try:
        data = reserves.reserves_inclusion_proof(proof_id=proof_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    except ApplicationError as exc:
        return HttpResponse(exc.message, status=exc.status, content_type="text/plain")
    asset = data["reserves"]["asset"]
    return _attachment(data, f"my-reserves-proof-{asset}-{proof_id}.json")


def _attachment(data: dict[str, Any], filename: str) -> HttpResponse:
    response = JsonResponse(data, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
