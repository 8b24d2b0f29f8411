"""Profiles' rules: limits per tier, freezes, strikes and suspensions, KYC documents and their
review, trusted and blocked lists."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts import services
from accounts.models import KycDocument, Profile, ProfileEvent, TraderRelation
from accounts.selectors import limits_status, profile_for
from accounts.tests.factories import (
    DEFAULT_LIMITS,
    PDF,
    UserFactory,
    complete,
    reviewer,
    set_tier,
    upload,
)
from common.errors import (
    Conflict,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from escrow import services as escrow
from escrow import services as escrow_services
from escrow.models import Trade, TradeVolumeDay
from escrow.selectors import trade_volume_eur
from escrow.selectors.stats import volume_day
from ledger.models import LedgerAccount, Transfer
from marketplace.models import Offer
from marketplace.selectors import offer_book
from marketplace.tests.factories import fund, make_offer, make_trade

pytestmark = pytest.mark.django_db


def _snapshot():
    return (
        list(
            LedgerAccount.objects.order_by("pk").values_list(
                "debits_pending", "debits_posted", "credits_pending", "credits_posted"
            )
        ),
        list(Offer.objects.order_by("pk").values_list("available", "is_active")),
        Trade.objects.count(),
        Transfer.objects.count(),
    )


@pytest.fixture
def limits(settings):
    settings.KYC_LIMITS_EUR = DEFAULT_LIMITS
    return settings


@pytest.fixture
def btc_offer(alice):
    """alice sells 1 BTC at 80,000 EUR, 10-100,000 EUR per trade."""
    fund(alice, "BTC", "2")
    return make_offer(alice, amount="1", max_fiat="100000")


# --- limits per tier --------------------------------------------------------------------------


class TestPerTradeLimit:
    def test_tier_0_taker_over_the_per_trade_limit_is_told_the_limit_and_how_to_raise_it(
        self, limits, btc_offer, bob
    ):
        # given bob, unverified (tier 0: 1,000 EUR per trade)
        before = _snapshot()
        # when he takes 1,200 EUR
        with pytest.raises(ValidationFailed) as caught:
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="1200")
        # then he is told the size, his limit and how to raise it; nothing changed
        assert caught.value.message == (
            "This trade is 1,200 EUR; tier 0 allows 1,000 EUR per trade. Verify your identity "
            "(Settings → Verification) to raise it to 10,000 EUR."
        )
        assert caught.value.code == "limit_exceeded"
        assert set(caught.value.fields) == {"fiat_amount"}
        assert _snapshot() == before

    def test_the_limit_itself_is_allowed(self, limits, btc_offer, bob):
        trade = escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="1000")
        assert trade.fiat_amount == Decimal("1000.00")

    def test_by_asset_amount_the_field_is_amount(self, limits, btc_offer, bob):
        with pytest.raises(ValidationFailed) as caught:
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, amount="0.02")  # 1,600 EUR
        assert "This trade is 1,600 EUR" in caught.value.message
        assert set(caught.value.fields) == {"amount"}

    def test_tier_1_trades_more(self, limits, btc_offer, bob):
        set_tier(bob, 1)
        set_tier(btc_offer.maker, 1)
        trade = escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="8000")
        assert trade.fiat_amount == Decimal("8000.00")
        with pytest.raises(ValidationFailed, match=r"tier 1 allows 10,000 EUR per trade.*100,000"):
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="10000.01")

    def test_tier_2_has_nowhere_higher_to_go(self, limits, btc_offer, bob, settings):
        settings.KYC_LIMITS_EUR = {
            **DEFAULT_LIMITS,
            2: {"per_trade": "5000", "per_30_days": "1000000"},
        }
        set_tier(bob, 2)
        set_tier(btc_offer.maker, 2)
        with pytest.raises(ValidationFailed, match="That is the highest tier's limit"):
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="6000")

    def test_the_makers_limit_counts_too(self, limits, btc_offer, bob):
        # given bob verified, but alice (the maker) unverified
        set_tier(bob, 2)
        before = _snapshot()
        # when bob takes more than alice's tier allows
        with pytest.raises(Conflict) as caught:
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="1200")
        # then it is refused as the other party's limit, without saying her volume
        assert caught.value.code == "counterparty_limit"
        assert "other party's per-trade limit" in caught.value.message
        assert _snapshot() == before

    def test_a_buy_offer_limits_the_taking_seller(self, limits, alice, bob):
        # given alice buys BTC; bob (tier 0) sells into her offer
        offer = make_offer(alice, side="buy", amount="1", max_fiat="100000")
        fund(bob, "BTC", "1")
        with pytest.raises(ValidationFailed, match="tier 0 allows 1,000 EUR per trade"):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="1500")

    def test_other_fiat_is_converted_at_the_eur_index(self, limits, alice, bob):
        # given a BTC/USD offer at 90,000 USD; the BTC/EUR index is 85,000
        fund(alice, "BTC", "1")
        offer = make_offer(alice, fiat="USD", price="90000", amount="0.5")
        # 0.015 BTC = 1,350 USD, worth 1,275 EUR at the index
        with pytest.raises(ValidationFailed) as caught:
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.015")
        assert caught.value.message.startswith("This trade is 1,275 EUR;")
        # 0.011 BTC = 935 EUR: fine
        assert escrow_services.trade_open(
            offer_id=offer.pk, taker=bob, amount="0.011"
        ).amount == Decimal("0.011")


class TestThirtyDayLimit:
    @pytest.fixture
    def roomy(self, settings):
        # A per-trade limit as big as the 30-day one, so a few trades make up the history.
        settings.KYC_LIMITS_EUR = {
            **DEFAULT_LIMITS,
            0: {"per_trade": "5000", "per_30_days": "5000"},
        }

    def test_volume_of_the_last_30_days_counts_both_sides(self, roomy, btc_offer, bob, carol):
        # given bob bought 3,200 EUR from alice and sold 800 EUR to carol
        escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="3200")
        fund(bob, "BTC", "1")
        bobs = make_offer(bob, amount="0.1")
        escrow_services.trade_open(offer_id=bobs.pk, taker=carol, fiat_amount="800")
        assert trade_volume_eur(user_ids=[bob.pk])[bob.pk] == Decimal("4000.00")
        before = _snapshot()
        # when he takes another 1,200 EUR
        with pytest.raises(ValidationFailed) as caught:
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="1200")
        # then the 30-day limit stops him, with the numbers and the way up
        assert caught.value.message == (
            "This trade is 1,200 EUR; with your trades of the last 30 days (4,000 EUR) that "
            "makes 5,200 EUR, and tier 0 allows 5,000 EUR per 30 days. Verify your identity "
            "(Settings → Verification) to raise it to 50,000 EUR per 30 days."
        )
        assert _snapshot() == before
        # and up to the limit is fine
        escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="1000")

    def test_cancelled_expired_and_old_trades_dont_count(self, roomy, btc_offer, bob):
        cancelled = escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="4000")
        escrow.trade_cancel(trade_id=cancelled.pk, actor=bob)
        expired = escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="4000")
        Trade.objects.filter(pk=expired.pk).update(payment_deadline=timezone.now())
        escrow.escrow_expire(trade_id=expired.pk)
        old = escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="4000")
        month_ago = timezone.now() - timedelta(days=31)
        Trade.objects.filter(pk=old.pk).update(created_at=month_ago)
        TradeVolumeDay.objects.update(day=volume_day(month_ago))  # both parties: all three trades
        assert trade_volume_eur(user_ids=[bob.pk])[bob.pk] == Decimal(0)
        escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="5000")

    def test_the_makers_30_day_volume_counts_too(self, roomy, btc_offer, bob, carol):
        # given alice (tier 0) already sold 4,500 EUR to carol
        set_tier(carol, 2)
        escrow_services.trade_open(offer_id=btc_offer.pk, taker=carol, fiat_amount="4500")
        set_tier(bob, 2)
        # when bob (verified) takes 1,000 EUR from her
        with pytest.raises(Conflict, match="other party over their 30-day trading limit"):
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="1000")

    def test_settings_page_shows_what_is_used(self, roomy, btc_offer, bob):
        escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="1500")
        status = limits_status(user=bob)
        assert status.used_30_days == Decimal("1500.00")
        assert status.left_30_days == Decimal("3500.00")
        assert status.next.tier == 1


# --- freezes, strikes, suspensions ------------------------------------------------------------


@pytest.fixture
def moderator(refdata):
    from django.contrib.auth.models import Permission

    user = UserFactory(username="mod", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="freeze_account"))
    return type(user).objects.get(pk=user.pk)


class TestFreeze:
    def test_frozen_users_cannot_post_or_take(self, limits, btc_offer, bob, moderator):
        services.profile_freeze(user=bob, actor=moderator, reason="Chargeback reports")
        fund(bob, "BTC", "1")
        before = _snapshot()
        with pytest.raises(PermissionDenied, match="frozen: Chargeback reports") as caught:
            make_offer(bob, amount="0.1")
        assert caught.value.status == 403
        with pytest.raises(PermissionDenied, match="frozen"):
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="100")
        with pytest.raises(PermissionDenied, match="frozen"):
            escrow_services.trade_match(
                taker=bob, side="buy", asset="BTC", fiat="EUR", fiat_amount="100"
            )
        assert _snapshot() == before
        assert ProfileEvent.objects.get(user=bob).action == "frozen"

    def test_a_frozen_makers_offers_leave_the_book(self, limits, btc_offer, bob, moderator):
        alice = btc_offer.maker
        services.profile_freeze(user=alice, actor=moderator, reason="Review")
        assert list(offer_book(side="sell")) == []
        with pytest.raises(Conflict, match="can't be taken right now"):
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="100")
        services.profile_unfreeze(user=alice, actor=moderator)
        assert [o.pk for o in offer_book(side="sell")] == [btc_offer.pk]
        escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="100")

    def test_ongoing_trades_settle_for_frozen_users(self, limits, btc_offer, bob, moderator):
        # given a trade in progress, then both parties frozen
        trade = escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="800")
        services.profile_freeze(user=bob, actor=moderator, reason="Review")
        services.profile_freeze(user=btc_offer.maker, actor=moderator, reason="Review")
        # when it goes on: paid, released, settled
        complete(trade)
        # then it completes as usual
        assert trade.state == Trade.State.COMPLETED

    def test_only_moderators_freeze(self, bob, carol):
        with pytest.raises(PermissionDenied):
            services.profile_freeze(user=bob, actor=carol, reason="I don't like him")
        assert not profile_for(bob).is_frozen

    def test_a_reason_is_required(self, bob, moderator):
        with pytest.raises(ValidationFailed) as caught:
            services.profile_freeze(user=bob, actor=moderator, reason="  ")
        assert set(caught.value.fields) == {"reason"}


class TestStrikesAndSuspension:
    def test_penalize_adds_a_strike_and_suspends(self, limits, btc_offer, bob, moderator):
        profile = services.profile_penalize(
            user=bob, actor=moderator, reason="Lost a dispute", suspend_days=3
        )
        assert profile.strikes == 1
        assert profile.suspended_until > timezone.now() + timedelta(days=2, hours=23)
        event = ProfileEvent.objects.get(user=bob)
        assert (event.action, event.actor, event.reason) == ("strike", moderator, "Lost a dispute")
        assert "suspended 3 days" in event.detail
        with pytest.raises(PermissionDenied, match="suspended from trading until"):
            escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="100")
        with pytest.raises(PermissionDenied, match="suspended"):
            make_offer(bob, side="buy")

    def test_a_strike_alone_doesnt_stop_trading(self, limits, btc_offer, bob):
        services.profile_penalize(user=bob, actor=None, reason="Late payment")
        assert profile_for(bob).strikes == 1
        escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="100")

    def test_a_longer_suspension_is_kept(self, bob):
        services.profile_penalize(user=bob, actor=None, reason="a", suspend_days=30)
        until = profile_for(bob).suspended_until
        profile = services.profile_penalize(user=bob, actor=None, reason="b", suspend_days=1)
        assert profile.suspended_until == until
        assert profile.strikes == 2

    def test_suspension_ends(self, limits, btc_offer, bob):
        # given a suspension that has run out
        services.profile_penalize(user=bob, actor=None, reason="a", suspend_days=1)
        Profile.objects.filter(user=bob).update(suspended_until=timezone.now() - timedelta(1))
        # when bob takes an offer
        trade = escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="100")
        # then he trades again, as the buyer of a funded trade
        assert (trade.state, trade.buyer_id) == (Trade.State.FUNDED, bob.pk)
        assert profile_for(bob).strikes == 1

    def test_ongoing_trades_of_a_suspended_seller_settle(self, limits, btc_offer, bob):
        trade = escrow_services.trade_open(offer_id=btc_offer.pk, taker=bob, fiat_amount="800")
        services.profile_penalize(user=btc_offer.maker, actor=None, reason="x", suspend_days=7)
        services.profile_penalize(user=bob, actor=None, reason="x", suspend_days=7)
        complete(trade)
        assert trade.state == Trade.State.COMPLETED

    @pytest.mark.parametrize("days", [-1, 366, "3", True])
    def test_bad_suspension_days(self, bob, days):
        with pytest.raises(ValidationFailed) as caught:
            services.profile_penalize(user=bob, actor=None, reason="x", suspend_days=days)
        assert set(caught.value.fields) == {"suspend_days"}
        assert profile_for(bob).strikes == 0


class TestProfiles:
    def test_profile_for_creates_it_once(self, bob):
        assert not Profile.objects.filter(user=bob).exists()
        first = profile_for(bob)
        assert profile_for(bob).pk == first.pk
        assert first.kyc_tier == 0


# --- KYC documents ----------------------------------------------------------------------------


class TestKycDocuments:
    def test_submit_sniffs_the_content(self, bob):
        document = services.kyc_document_submit(
            user=bob, kind="passport", file=upload(PDF, "scan.png"), requested_tier=1
        )
        assert document.content_type == "application/pdf"  # by content, not by name
        assert document.status == "pending"
        assert document.file.storage.exists(document.file.name)

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"file": upload(b"just text", "id.png")}, "file"),
            ({"kind": "selfie"}, "kind"),
            ({"requested_tier": 3}, "requested_tier"),
            ({"requested_tier": "x"}, "requested_tier"),
            ({"file": None}, "file"),
        ],
    )
    def test_bad_input_names_the_field_and_stores_nothing(self, bob, overrides, field):
        values = {"kind": "passport", "file": upload(), "requested_tier": 1, **overrides}
        with pytest.raises(ValidationFailed) as caught:
            services.kyc_document_submit(user=bob, **values)
        assert set(caught.value.fields) == {field}
        assert not KycDocument.objects.exists()

    def test_size_limit(self, bob, settings):
        settings.KYC_DOCUMENT_MAX_BYTES = 32
        with pytest.raises(ValidationFailed, match="larger than"):
            services.kyc_document_submit(user=bob, kind="passport", file=upload(), requested_tier=1)

    def test_no_request_for_a_tier_already_held(self, bob):
        set_tier(bob, 1)
        with pytest.raises(ValidationFailed, match="already tier 1"):
            services.kyc_document_submit(user=bob, kind="passport", file=upload(), requested_tier=1)

    def test_approval_raises_the_tier(self, bob):
        document = services.kyc_document_submit(
            user=bob, kind="proof_of_address", file=upload(), requested_tier=2
        )
        staff = reviewer()
        reviewed = services.kyc_document_review(
            document_id=document.pk, actor=staff, approve=True, reason=""
        )
        assert (reviewed.status, reviewed.reviewed_by) == ("approved", staff)
        assert reviewed.reviewed_at is not None
        assert profile_for(bob).kyc_tier == 2
        event = ProfileEvent.objects.get(user=bob)
        assert event.action == "kyc_approved"
        assert "tier 0 → 2" in event.detail
        with pytest.raises(InvalidTransition, match="already approved"):
            services.kyc_document_review(
                document_id=document.pk, actor=staff, approve=False, reason="oops"
            )

    def test_rejection_needs_a_reason_and_then_the_owner_may_delete(
        self, bob, carol, django_capture_on_commit_callbacks
    ):
        document = services.kyc_document_submit(
            user=bob, kind="passport", file=upload(), requested_tier=1
        )
        staff = reviewer()
        with pytest.raises(ValidationFailed):
            services.kyc_document_review(
                document_id=document.pk, actor=staff, approve=False, reason=""
            )
        # a pending document can't be deleted yet
        with pytest.raises(InvalidTransition, match="only rejected documents"):
            services.kyc_document_delete(document_id=document.pk, actor=bob)
        services.kyc_document_review(
            document_id=document.pk, actor=staff, approve=False, reason="The photo is blurred."
        )
        document.refresh_from_db()
        assert (document.status, document.review_reason) == ("rejected", "The photo is blurred.")
        assert profile_for(bob).kyc_tier == 0
        # only the owner
        with pytest.raises(NotFound):
            services.kyc_document_delete(document_id=document.pk, actor=carol)
        name, storage = document.file.name, document.file.storage
        with django_capture_on_commit_callbacks(execute=True):  # the file goes on commit
            services.kyc_document_delete(document_id=document.pk, actor=bob)
        assert not KycDocument.objects.exists()
        assert not storage.exists(name)

    def test_approved_documents_stay(self, bob):
        document = services.kyc_document_submit(
            user=bob, kind="passport", file=upload(), requested_tier=1
        )
        services.kyc_document_review(document_id=document.pk, actor=reviewer(), approve=True)
        with pytest.raises(InvalidTransition):
            services.kyc_document_delete(document_id=document.pk, actor=bob)

    def test_only_reviewers_review_and_never_their_own(self, bob):
        document = services.kyc_document_submit(
            user=bob, kind="passport", file=upload(), requested_tier=1
        )
        for actor in (bob, reviewer("staff", perm=False), None):
            with pytest.raises(PermissionDenied):
                services.kyc_document_review(document_id=document.pk, actor=actor, approve=True)
        own = reviewer("self-reviewer")
        mine = services.kyc_document_submit(
            user=own, kind="passport", file=upload(), requested_tier=1
        )
        with pytest.raises(PermissionDenied, match="your own"):
            services.kyc_document_review(document_id=mine.pk, actor=own, approve=True)
        assert KycDocument.objects.filter(status="pending").count() == 2
        assert profile_for(bob).kyc_tier == 0


# --- trusted and blocked lists ----------------------------------------------------------------


class TestRelations:
    def test_trust_then_block_replaces(self, alice, bob):
        trusted = services.trader_relation_add(actor=alice, username="bob", kind="trusted")
        blocked = services.trader_relation_add(actor=alice, username="bob", kind="blocked")
        assert trusted.pk == blocked.pk
        assert TraderRelation.objects.get().kind == "blocked"

    @pytest.mark.parametrize(
        ("username", "kind", "field"),
        [("alice", "trusted", "username"), ("nobody", "blocked", "username"), ("bob", "x", "kind")],
    )
    def test_bad_input(self, alice, bob, username, kind, field):
        with pytest.raises(ValidationFailed) as caught:
            services.trader_relation_add(actor=alice, username=username, kind=kind)
        assert set(caught.value.fields) == {field}
        assert not TraderRelation.objects.exists()

    @pytest.mark.parametrize("kind", ["trusted", "blocked"])
    def test_cant_trust_or_block_yourself(self, alice, kind):
        verb = {"trusted": "trust", "blocked": "block"}[kind]
        with pytest.raises(ValidationFailed, match=f"can't {verb} yourself"):
            services.trader_relation_add(actor=alice, username="alice", kind=kind)
        assert not TraderRelation.objects.exists()

    def test_remove_only_your_own(self, alice, bob):
        relation = services.trader_relation_add(actor=alice, username="bob", kind="trusted")
        with pytest.raises(NotFound):
            services.trader_relation_remove(actor=bob, relation_id=relation.pk)
        services.trader_relation_remove(actor=alice, relation_id=relation.pk)
        assert not TraderRelation.objects.exists()


def test_make_trade_helper_fits_tier_0(limits, alice, bob):
    # The factories' default trade (0.01 BTC at 80,000 EUR) stays under tier 0's limits.
    trade = make_trade(alice, bob)
    assert trade.fiat_amount == Decimal("800.00")
