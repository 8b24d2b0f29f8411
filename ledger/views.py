"""The wallet: balances, deposits and withdrawals, transfers, and each transfer's proof (the
browser UI). Thin: each view parses a form and calls one service or selector."""

from __future__ import annotations

import json
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext, gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods

from common.db import replica_reads
from common.errors import ApplicationError, NotFound
from common.forms import add_application_error
from common.templatetags.money import amount as amount_text
from ledger import selectors as ledger_selectors
from ledger import services as ledger
from ledger.adapters import get_chain_adapter
from ledger.evm.config import enabled as chain_enabled
from ledger.evm.deposits import chain_deposit_list_for_user, deposit_target_for
from ledger.forms import WithdrawalForm
from ledger.models import Transfer

TRANSFERS_PAGE = 50


# --- wallet -----------------------------------------------------------------------------------

# Lazy: written out in the reader's language when the wallet page is drawn.
TRANSFER_KINDS: dict[str, Any] = {
    Transfer.Kind.DEPOSIT: gettext_lazy("Deposit"),
    Transfer.Kind.WITHDRAWAL: gettext_lazy("Withdrawal"),
    Transfer.Kind.ESCROW_HOLD: gettext_lazy("Escrow"),
    Transfer.Kind.TRADE_PAYOUT: gettext_lazy("Trade payout"),
    Transfer.Kind.TRADE_FEE: gettext_lazy("Trade fee"),
    Transfer.Kind.LOAN_COLLATERAL: gettext_lazy("Loan collateral"),
    Transfer.Kind.LOAN_FUNDING: gettext_lazy("Loan funding"),
    Transfer.Kind.LOAN_INSTALLMENT: gettext_lazy("Loan installment"),
    Transfer.Kind.LOAN_LIQUIDATION: gettext_lazy("Loan liquidation"),
    Transfer.Kind.LOAN_FEE: gettext_lazy("Loan fee"),
    Transfer.Kind.LOAN_COMPENSATION: gettext_lazy("Loan compensation"),
}
FLAG_NOTES: dict[str, Any] = {
    Transfer.Flags.PENDING: gettext_lazy("held"),
    Transfer.Flags.POST_PENDING: gettext_lazy("hold settled"),
    Transfer.Flags.VOID_PENDING: gettext_lazy("hold returned"),
}


def _transfer_row(transfer: Transfer, user: Any) -> dict[str, Any]:
    """A transfer as the user sees it, in words."""
    sign, change = ledger_selectors.transfer_effect_for_user(transfer=transfer, user=user)
    return {
        "t": transfer,
        "kind": TRANSFER_KINDS.get(transfer.kind, transfer.kind),
        "note": FLAG_NOTES.get(transfer.flags, ""),
        "sign": sign,
        "change": change,
    }


@login_required
@require_http_methods(["GET", "POST"])
def wallet(request: HttpRequest) -> HttpResponse:
    """Balances, deposit instructions, the withdrawal form and the transfer history."""
    form = WithdrawalForm(initial={"asset": request.GET.get("asset", "BTC")})
    status = 200
    if request.method == "POST":
        form = WithdrawalForm(request.POST)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                ledger.withdrawal_owner_confirm(
                    user=request.user, otp=data.get("otp"), password=data.get("password")
                )
                withdrawal = ledger.withdrawal_request(
                    user=request.user,
                    asset_code=data["asset"],
                    amount=data["amount"],
                    address=data["address"],
                    max_fee=data.get("max_fee") or None,
                )
            except ApplicationError as exc:
                add_application_error(form, exc)
                status = exc.status
            else:
                messages.success(
                    request,
                    gettext(
                        "Withdrawal of {v1} {code} requested. The amount is held until it is sent."
                    ).format(
                        v1=amount_text(withdrawal.amount, withdrawal.asset.precision),
                        code=withdrawal.asset.code,
                    ),
                )
                return redirect("wallet")
    wallets = ledger_selectors.wallet_list_for_user(user=request.user)
    deposits = [_deposit_row(request, w.asset) for w in wallets]
    transfers = ledger_selectors.transfer_list_for_user(user=request.user).select_related("pending")
    page = Paginator(transfers, TRANSFERS_PAGE).get_page(request.GET.get("page"))
    # The fiat balances are shown in: the one picked here (kept for the session), else the user's.
    if request.GET.get("in"):
        request.session["wallet_fiat"] = request.GET["in"][:3].upper()
    value_fiat, values = ledger_selectors.wallet_values(
        user=request.user, wallets=wallets, fiat_code=request.session.get("wallet_fiat")
    )
    context = {
        "wallets": wallets,
        # Each balance's approximate value in the user's fiat at the index (none without a price).
        "wallet_rows": [{"w": w, "value": values.get(w.asset.pk)} for w in wallets],
        "value_fiat": value_fiat,
        "value_fiats": ledger_selectors.wallet_value_fiats(),
        "total_value": sum(values.values()) if values else None,
        "deposits": deposits,
        "form": form,
        "page": page,
        "rows": [_transfer_row(t, request.user) for t in page],
        "withdrawals": ledger_selectors.withdrawal_list_recent(user=request.user),
        **_chain_deposits_context(request),
        "balances": {w.asset.code: amount_text(w.available, w.asset.precision) for w in wallets},
        # The network fee of a withdrawal of each asset now (shown before confirming; held with
        # the amount): "" for none, null when the node did not answer.
        "withdrawal_fees": {
            code: (None if fee is None else (format(fee.normalize(), "f") if fee else ""))
            for code, fee in ledger_selectors.withdrawal_fee_quotes(
                assets=[w.asset for w in wallets]
            ).items()
        },
    }
    return render(request, "marketplace/wallet.html", context, status=status)


# --- deposits on the chain -----------------------------------------------------------------


def _deposit_row(request: HttpRequest, asset: Any) -> dict[str, Any]:
    """How to deposit an asset; on the chain, the user's own address, its QR code and the
    confirmations it needs."""
    target = deposit_target_for(user=request.user, asset_code=asset.code)
    return {
        "asset": asset,
        "text": get_chain_adapter(asset).deposit_instructions(
            user_id=cast(int, request.user.pk), asset=asset
        ),
        "target": target,
        "qr_svg": _address_qr(target.address) if target else "",
    }


def _address_qr(address: str) -> str:
    """An address as an inline SVG QR code (markup only: no script, no inline style)."""
    import segno

    return str(segno.make(address, micro=False).svg_inline(scale=4, dark="#1e2329"))


def _chain_deposits_context(request: HttpRequest) -> dict[str, Any]:
    return {
        "chain_enabled": chain_enabled(),
        "chain_deposits": chain_deposit_list_for_user(user=request.user),
    }


@login_required
@require_GET
def wallet_chain_deposits(request: HttpRequest) -> HttpResponse:
    """The wallet's recent chain deposits with their confirmations (the page polls it)."""
    return render(request, "ledger/_chain_deposits.html", _chain_deposits_context(request))


@login_required
@require_GET
@replica_reads
def transfer_proof(request: HttpRequest, seq: int) -> HttpResponse:
    """The inclusion proof of one of the user's ledger entries against the latest signed
    checkpoint, checked here with the same code as the offline verifier, and downloadable; until
    a checkpoint holds the entry, when one will."""
    from ledger.verify import VerificationError, load_keys, verify_proof

    try:
        status = ledger_selectors.proof_status_for_entry(seq=seq, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    context: dict[str, Any] = {"seq": seq, "status": status}
    if status.state != ledger_selectors.ProofState.READY:
        return render(request, "marketplace/transfer_proof.html", context)
    try:
        proof = ledger_selectors.inclusion_proof(seq=seq, tree_size=None, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    except ApplicationError as exc:
        context["error"] = exc.message
        return render(request, "marketplace/transfer_proof.html", context, status=exc.status)
    try:
        entry = verify_proof(proof, load_keys({"keys": ledger_selectors.public_keys()}))
        context["verified"] = True
        context["entry"] = entry
    except VerificationError as exc:
        context["verified"] = False
        context["error"] = str(exc)
    context["proof"] = proof
    context["proof_json"] = json.dumps(proof, indent=2)
    return render(request, "marketplace/transfer_proof.html", context)


@login_required
@require_GET
def transfer_proof_by_id(request: HttpRequest, transfer_id: int) -> HttpResponse:
    """A transfer the sequencer has not sealed yet has no seq: this page says so, and sends to
    the seq's proof page once it has one."""
    try:
        status = ledger_selectors.proof_status_for_entry(transfer_id=transfer_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    if status.seq is not None:
        return redirect("transfer_proof", seq=status.seq)
    context = {"seq": None, "status": status}
    return render(request, "marketplace/transfer_proof.html", context)
