"""Every allowed transition of docs/architecture.md's table, and the forbidden ones (wrong user, wrong state)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts.tests.factories import UserFactory
from common.errors import Conflict, InvalidTransition, NotFound, PermissionDenied
from escrow import services
from escrow.models import EscrowEvent, Settlement, Trade
from ledger.models import LedgerAccount, Transfer
from ledger.selectors import balance_available
from marketplace.models import Offer
from marketplace.tests.factories import make_trade

S = Trade.State


def _settle(trade: Trade) -> Trade:
    services.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)
    trade.refresh_from_db()
    return trade


def _moderator():
    user = UserFactory(username="mod", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    return UserFactory._meta.model.objects.get(pk=user.pk)  # fresh permission cache


def _paid(trade: Trade, buyer) -> Trade:
    return services.trade_mark_paid(trade_id=trade.pk, actor=buyer)


@pytest.mark.django_db
class TestHappyPath:
    def test_release_completes_and_pays_buyer_minus_fees(self, alice, bob):
        # given a funded trade: alice sells 0.01 BTC to bob
        trade = make_trade(alice, bob, amount="0.01")
        assert trade.state == S.FUNDED
        assert balance_available(user=alice, asset_code="BTC") == Decimal("1") - trade.hold_amount
        # when bob marks paid and alice releases, and the settlement runs
        _paid(trade, bob)
        services.escrow_release(trade_id=trade.pk, actor=alice)
        trade = _settle(trade)
        # then the trade is completed; bob has the amount less his fee; fees are on the fee account
        assert trade.state == S.COMPLETED
        assert balance_available(user=bob, asset_code="BTC") == trade.amount - trade.buyer_fee
        fees = LedgerAccount.objects.get(code="fees:BTC")
        assert fees.balance == trade.seller_fee + trade.buyer_fee > 0
        states = list(trade.events.values_list("old_state", "new_state", "actor_role"))
        assert states == [
            ("", S.FUNDED, "buyer"),
            (S.FUNDED, S.PAID, "buyer"),
            (S.PAID, S.RELEASING, "seller"),
            (S.RELEASING, S.COMPLETED, "system"),
        ]

    def test_settlement_runs_once_however_often_it_is_called(self, alice, bob):
        trade = make_trade(alice, bob)
        _paid(trade, bob)
        services.escrow_release(trade_id=trade.pk, actor=alice)
        settlement = Settlement.objects.get(trade=trade)
        for _ in range(3):
            services.settlement_execute(settlement_id=settlement.pk)
        assert Transfer.objects.filter(reference=trade.pk, kind="trade_payout").count() == 1
        assert balance_available(user=bob, asset_code="BTC") == trade.amount - trade.buyer_fee

    def test_cancel_returns_the_hold_and_the_offer_amount(self, alice, bob):
        trade = make_trade(alice, bob, amount="0.02")
        services.trade_cancel(trade_id=trade.pk, actor=bob)
        trade.refresh_from_db()
        assert trade.state == S.CANCELLED
        assert trade.closed_at is not None
        assert balance_available(user=alice, asset_code="BTC") == Decimal("1")
        assert Offer.objects.get(pk=trade.offer_id).available == Decimal("0.5")

    def test_expire_after_the_window(self, alice, bob):
        trade = make_trade(alice, bob)
        Trade.objects.filter(pk=trade.pk).update(
            payment_deadline=timezone.now() - timedelta(seconds=1)
        )
        assert services.trades_expire_overdue() == 1
        trade.refresh_from_db()
        assert trade.state == S.EXPIRED
        assert balance_available(user=alice, asset_code="BTC") == Decimal("1")

    def test_expire_refused_while_window_open(self, alice, bob):
        trade = make_trade(alice, bob)
        with pytest.raises(InvalidTransition, match="still open"):
            services.escrow_expire(trade_id=trade.pk)
        assert services.trades_expire_overdue() == 0

    def test_paid_trade_never_expires(self, alice, bob):
        trade = make_trade(alice, bob)
        _paid(trade, bob)
        Trade.objects.filter(pk=trade.pk).update(
            payment_deadline=timezone.now() - timedelta(minutes=1)
        )
        assert services.trades_expire_overdue() == 0
        with pytest.raises(InvalidTransition):
            services.escrow_expire(trade_id=trade.pk)

    def test_mark_paid_after_deadline_is_refused(self, alice, bob):
        trade = make_trade(alice, bob)
        Trade.objects.filter(pk=trade.pk).update(
            payment_deadline=timezone.now() - timedelta(seconds=1)
        )
        with pytest.raises(InvalidTransition, match="payment window has ended"):
            _paid(trade, bob)

    def test_dispute_from_paid_waits_for_the_delay(self, alice, bob, settings):
        trade = make_trade(alice, bob)
        _paid(trade, bob)
        with pytest.raises(Conflict, match="can be opened from"):
            services.trade_dispute(trade_id=trade.pk, actor=alice)
        Trade.objects.filter(pk=trade.pk).update(paid_at=timezone.now() - settings.DISPUTE_DELAY)
        assert services.trade_dispute(trade_id=trade.pk, actor=alice).state == S.DISPUTED

    def test_buyer_disputes_from_funded(self, alice, bob):
        trade = make_trade(alice, bob)
        assert (
            services.trade_dispute(trade_id=trade.pk, actor=bob, reason="paid, button failed").state
            == S.DISPUTED
        )
        # no expiry while disputed
        Trade.objects.filter(pk=trade.pk).update(
            payment_deadline=timezone.now() - timedelta(minutes=1)
        )
        assert services.trades_expire_overdue() == 0

    @pytest.mark.parametrize(
        ("decision", "final", "buyer_gets"),
        [
            (S.RELEASING, S.COMPLETED, "0.00998"),
            (S.REFUNDING, S.REFUNDED, "0"),
            (S.SPLITTING, S.SPLIT, "0.004"),
        ],
    )
    def test_moderator_decisions_settle(self, alice, bob, decision, final, buyer_gets):
        trade = make_trade(alice, bob, amount="0.01")
        services.trade_dispute(trade_id=trade.pk, actor=bob)
        split = Decimal("0.004") if decision == S.SPLITTING else None
        services._escrow_transition(
            trade_id=trade.pk,
            to=decision,
            actor=_moderator(),
            as_moderator=True,
            split_buyer_amount=split,
        )
        trade = _settle(trade)
        assert trade.state == final
        assert balance_available(user=bob, asset_code="BTC") == Decimal(buyer_gets)
        assert (
            balance_available(user=alice, asset_code="BTC")
            + Decimal(buyer_gets)
            + LedgerAccount.objects.get(code="fees:BTC").balance
            if final == S.COMPLETED
            else True
        )


@pytest.mark.django_db
class TestForbidden:
    def test_seller_cannot_mark_paid(self, alice, bob):
        trade = make_trade(alice, bob)
        with pytest.raises(PermissionDenied, match="Only the buyer"):
            _paid(trade, alice)
        trade.refresh_from_db()
        assert trade.state == S.FUNDED
        assert not trade.events.filter(new_state=S.PAID).exists()

    def test_buyer_cannot_release(self, alice, bob):
        trade = make_trade(alice, bob)
        _paid(trade, bob)
        with pytest.raises(PermissionDenied, match="Only the seller"):
            services.escrow_release(trade_id=trade.pk, actor=bob)
        assert not Settlement.objects.exists()

    def test_seller_cannot_cancel(self, alice, bob):
        trade = make_trade(alice, bob)
        with pytest.raises(PermissionDenied):
            services.trade_cancel(trade_id=trade.pk, actor=alice)

    def test_stranger_sees_nothing(self, alice, bob, carol):
        trade = make_trade(alice, bob)
        with pytest.raises(NotFound):
            _paid(trade, carol)

    def test_release_before_paid_is_wrong_state(self, alice, bob):
        trade = make_trade(alice, bob)
        with pytest.raises(InvalidTransition, match="funded"):
            services.escrow_release(trade_id=trade.pk, actor=alice)

    def test_cancel_after_paid_is_wrong_state(self, alice, bob):
        trade = make_trade(alice, bob)
        _paid(trade, bob)
        with pytest.raises(InvalidTransition, match="paid: it can no longer be cancelled"):
            services.trade_cancel(trade_id=trade.pk, actor=bob)

    def test_nothing_moves_a_final_state(self, alice, bob):
        trade = make_trade(alice, bob)
        services.trade_cancel(trade_id=trade.pk, actor=bob)
        for call, actor in (
            (services.trade_mark_paid, bob),
            (services.escrow_release, alice),
            (services.trade_cancel, bob),
            (services.trade_dispute, bob),
        ):
            with pytest.raises(InvalidTransition):
                call(trade_id=trade.pk, actor=actor)
        with pytest.raises(InvalidTransition):
            services.escrow_expire(trade_id=trade.pk)

    def test_parties_cannot_decide_a_dispute(self, alice, bob):
        trade = make_trade(alice, bob)
        services.trade_dispute(trade_id=trade.pk, actor=bob)
        with pytest.raises(PermissionDenied):
            services._escrow_transition(
                trade_id=trade.pk, to=S.RELEASING, actor=bob, as_moderator=True
            )
        with pytest.raises(PermissionDenied):
            services._escrow_transition(trade_id=trade.pk, to=S.RELEASING, actor=bob)

    def test_table_is_complete_and_closed(self):
        states = set(S.values)
        reachable = {to for (_, to) in services.TRANSITIONS} | {S.FUNDED}
        assert reachable == states
        for final in services.FINAL_STATES:
            assert not [k for k in services.TRANSITIONS if k[0] == final]


@pytest.mark.django_db
def test_every_transition_writes_one_event(alice, bob):
    trade = make_trade(alice, bob)
    _paid(trade, bob)
    services.escrow_release(trade_id=trade.pk, actor=alice)
    _settle(trade)
    assert EscrowEvent.objects.filter(trade=trade).count() == 4


def test_every_refusal_of_the_state_machine_is_a_whole_sentence():
    # given the transition table: every target state, and every (from, to) that some role may
    # make elsewhere but not from this state
    from escrow.services import transitions as t

    targets = {to for _, to in t.TRANSITIONS}
    partial = {
        (frm, to)
        for (frm, to), roles in t.TRANSITIONS.items()
        if frozenset().union(*(r for (_, d), r in t.TRANSITIONS.items() if d == to)) - roles
    }
    # then each refusal has its own message (no English role or verb pasted into it)
    assert targets <= set(t.ONLY_WHO)
    assert targets <= set(t.NO_LONGER)
    assert partial <= set(t.ONLY_NOW)
