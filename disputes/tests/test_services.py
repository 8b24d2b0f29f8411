"""Disputes: opening, evidence, moderator steps, the three decisions settling on the ledger,
permissions, and a decision racing a late release."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from accounts.tests.factories import UserFactory
from common.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from disputes import services
from disputes.apps import ensure_moderators_group
from disputes.models import Dispute, Evidence, ModeratorAction
from escrow import services as escrow
from escrow.models import Settlement, Trade
from ledger.models import LedgerAccount
from ledger.replay import verify_ledger
from ledger.selectors import balance_available
from ledger.services import ledger_seal_pending
from marketplace.tests.factories import make_trade

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def moderator(username: str = "mod"):
    ensure_moderators_group()
    user = UserFactory(username=username, is_staff=True)
    user.groups.add(Group.objects.get(name="Moderators"))
    return type(user).objects.get(pk=user.pk)


def settle(trade: Trade) -> Trade:
    escrow.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)
    trade.refresh_from_db()
    return trade


@pytest.fixture
def disputed(alice, bob):
    trade = make_trade(alice, bob, amount="0.01")
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    Trade.objects.filter(pk=trade.pk).update(paid_at=timezone.now() - timedelta(minutes=11))
    return services.dispute_open(
        trade_id=trade.pk,
        actor=bob,
        category="paid_not_released",
        text="I paid at 14:05 by SEPA, ref 1234.",
    )


@pytest.mark.django_db
class TestOpen:
    def test_open_moves_the_trade_and_records_the_dispute(self, disputed):
        assert disputed.trade.state == Trade.State.DISPUTED
        assert disputed.status == Dispute.Status.OPEN
        assert disputed.trade.messages.filter(sender__isnull=True).exists()  # both parties told

    def test_buyer_from_funded(self, alice, bob):
        trade = make_trade(alice, bob)
        dispute = services.dispute_open(
            trade_id=trade.pk,
            actor=bob,
            category="could_not_mark_paid",
            text="The button failed after I paid.",
        )
        assert dispute.trade.state == Trade.State.DISPUTED

    def test_too_early_and_bad_input_change_nothing(self, alice, bob):
        trade = make_trade(alice, bob)
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        with pytest.raises(Conflict, match="can be opened from"):
            services.dispute_open(
                trade_id=trade.pk,
                actor=alice,
                category="not_received",
                text="Nothing arrived in my bank.",
            )
        with pytest.raises(ValidationFailed) as err:
            services.dispute_open(
                trade_id=trade.pk, actor=bob, category="bogus", text="long enough text here"
            )
        assert "category" in err.value.fields
        with pytest.raises(ValidationFailed) as err:
            services.dispute_open(trade_id=trade.pk, actor=bob, category="other", text="short")
        assert "text" in err.value.fields
        assert not Dispute.objects.exists()
        trade.refresh_from_db()
        assert trade.state == Trade.State.PAID


@pytest.mark.django_db
class TestDecisions:
    def test_release_to_the_buyer(self, disputed, alice, bob):
        mod = moderator()
        services.dispute_decide(
            dispute_id=disputed.pk,
            actor=mod,
            outcome="release",
            reason="Bank statement shows the payment.",
        )
        trade = settle(disputed.trade)
        assert trade.state == Trade.State.COMPLETED
        assert balance_available(user=bob, asset_code="BTC") == trade.buyer_receives
        ledger_seal_pending()
        assert verify_ledger().ok

    def test_refund_to_the_seller(self, disputed, alice, bob):
        mod = moderator()
        services.dispute_decide(
            dispute_id=disputed.pk, actor=mod, outcome="refund", reason="No payment ever arrived."
        )
        trade = settle(disputed.trade)
        assert trade.state == Trade.State.REFUNDED
        assert balance_available(user=alice, asset_code="BTC") == Decimal("1")
        assert balance_available(user=bob, asset_code="BTC") == 0
        ledger_seal_pending()
        assert verify_ledger().ok

    def test_split(self, disputed, alice, bob):
        mod = moderator()
        services.dispute_decide(
            dispute_id=disputed.pk,
            actor=mod,
            outcome="split",
            buyer_amount="0.004",
            reason="Only part of the money arrived.",
        )
        trade = settle(disputed.trade)
        assert trade.state == Trade.State.SPLIT
        assert balance_available(user=bob, asset_code="BTC") == Decimal("0.004")
        assert balance_available(user=alice, asset_code="BTC") == Decimal("0.996")
        assert LedgerAccount.objects.get(code=f"escrow:trade:{trade.pk}").balance == 0
        ledger_seal_pending()
        assert verify_ledger().ok

    @pytest.mark.parametrize("share", ["0", "0.01", "0.02", "0.000000001", None])
    def test_bad_split_changes_nothing(self, disputed, share):
        with pytest.raises(ValidationFailed) as err:
            services.dispute_decide(
                dispute_id=disputed.pk,
                actor=moderator(),
                outcome="split",
                buyer_amount=share,
                reason="Only part of it arrived.",
            )
        assert "buyer_amount" in err.value.fields
        disputed.refresh_from_db()
        assert disputed.status == Dispute.Status.OPEN
        assert disputed.trade.state == Trade.State.DISPUTED

    def test_a_decision_is_final(self, disputed):
        mod = moderator()
        services.dispute_decide(
            dispute_id=disputed.pk, actor=mod, outcome="refund", reason="No payment ever arrived."
        )
        with pytest.raises(InvalidTransition, match="decided"):
            services.dispute_decide(
                dispute_id=disputed.pk,
                actor=mod,
                outcome="release",
                reason="Changed my mind, sorry.",
            )
        with pytest.raises(InvalidTransition):
            services.dispute_assign(dispute_id=disputed.pk, actor=mod)
        assert Settlement.objects.filter(trade=disputed.trade).count() == 1

    def test_penalty_for_the_loser(self, disputed, alice):
        from accounts.selectors import profile_for

        services.dispute_decide(
            dispute_id=disputed.pk,
            actor=moderator(),
            outcome="release",
            reason="The seller ignored the payment.",
            penalize_loser=True,
            suspend_days=3,
        )
        profile = profile_for(alice)
        assert profile.strikes == 1
        assert profile.suspended_until > timezone.now() + timedelta(days=2)

    def test_only_moderators_decide(self, disputed, alice, bob):
        staff_without_permission = UserFactory(username="clerk", is_staff=True)
        for actor in (alice, bob, staff_without_permission):
            with pytest.raises(PermissionDenied):
                services.dispute_decide(
                    dispute_id=disputed.pk,
                    actor=actor,
                    outcome="release",
                    reason="I decide myself.",
                )
        assert Dispute.objects.get(pk=disputed.pk).status == Dispute.Status.OPEN


@pytest.mark.django_db
class TestSteps:
    def test_assign_request_evidence_and_message_are_audited(self, disputed, bob):
        mod = moderator()
        services.dispute_assign(dispute_id=disputed.pk, actor=mod)
        services.dispute_request_evidence(
            dispute_id=disputed.pk,
            actor=mod,
            party="buyer",
            note="A bank statement please.",
            hours=12,
        )
        services.dispute_moderator_message(
            dispute_id=disputed.pk, actor=mod, text="Hello, I am looking at this now."
        )
        disputed.refresh_from_db()
        assert disputed.status == Dispute.Status.AWAITING_EVIDENCE
        assert disputed.assigned_to == mod
        assert list(
            ModeratorAction.objects.filter(dispute=disputed)
            .order_by("created_at")
            .values_list("action", flat=True)
        ) == [
            "assign",
            "request_evidence",
            "message",
        ]
        assert disputed.trade.messages.filter(is_moderator=True, sender=mod).exists()
        services.evidence_submit(
            dispute_id=disputed.pk,
            actor=bob,
            statement="Statement attached.",
            file=SimpleUploadedFile("statement.png", PNG, content_type="image/png"),
        )
        disputed.refresh_from_db()
        assert disputed.status == Dispute.Status.IN_REVIEW
        assert Evidence.objects.get().content_type == "image/png"

    def test_evidence_rules(self, disputed, carol, bob):
        with pytest.raises(NotFound):
            services.evidence_submit(dispute_id=disputed.pk, actor=carol, statement="I saw it all.")
        with pytest.raises(ValidationFailed) as err:
            services.evidence_submit(
                dispute_id=disputed.pk,
                actor=bob,
                file=SimpleUploadedFile(
                    "x.pdf", b"MZ\x90 not a pdf", content_type="application/pdf"
                ),
            )
        assert "file" in err.value.fields
        services.dispute_decide(
            dispute_id=disputed.pk,
            actor=moderator(),
            outcome="refund",
            reason="No payment ever arrived.",
        )
        with pytest.raises(InvalidTransition):
            services.evidence_submit(dispute_id=disputed.pk, actor=bob, statement="Too late?")
        assert not Evidence.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_decision_races_a_late_release(alice, bob):
    from conftest import require_postgres
    from escrow.tests.test_concurrency import run_at_once

    require_postgres()
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    Trade.objects.filter(pk=trade.pk).update(paid_at=timezone.now() - timedelta(minutes=11))
    mod = moderator()
    results = run_at_once(
        [
            lambda: services.dispute_open(
                trade_id=trade.pk, actor=bob, category="other", text="Seller is not answering me."
            ),
            lambda: escrow.escrow_release(trade_id=trade.pk, actor=alice),
        ]
    )
    dispute = Dispute.objects.filter(trade=trade).first()
    if dispute is not None:
        # the dispute won; now a decision races the seller's late release
        results = run_at_once(
            [
                lambda: services.dispute_decide(
                    dispute_id=dispute.pk, actor=mod, outcome="release", reason="Payment is proven."
                ),
                lambda: escrow.escrow_release(trade_id=trade.pk, actor=alice),
            ]
        )
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1, results
    assert Settlement.objects.filter(trade=trade).count() == 1
