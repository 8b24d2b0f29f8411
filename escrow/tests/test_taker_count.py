"""A taker's completed trades as offer requirements read them (escrow.selectors.stats.
completed_trades): the public stats' figure, in one query however long the history; the book's
"why not open" and the take read it."""

from __future__ import annotations

import pytest

from accounts import services as accounts
from accounts.tests.factories import DEFAULT_LIMITS, UserFactory, complete
from common.errors import PermissionDenied
from escrow import services as escrow
from escrow.selectors import trader_stats
from escrow.selectors.stats import completed_trades
from marketplace.selectors import offers_unmet_for_viewer
from marketplace.tests.factories import fund, make_offer, make_trade

pytestmark = pytest.mark.django_db

HOME = "203.0.113.7"


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.KYC_LIMITS_EUR = DEFAULT_LIMITS
    settings.TAKES_PER_MAKER_PER_MINUTE = 100


@pytest.fixture
def dave(refdata):
    return UserFactory(username="dave")


@pytest.fixture
def history(alice, bob, carol):
    """alice bought twice from carol and sold once to bob, all completed; a cancelled purchase
    from carol and a sale to carol still open don't count."""
    for _ in range(2):
        complete(make_trade(carol, alice))
    complete(make_trade(alice, bob))
    escrow.trade_cancel(trade_id=make_trade(carol, alice).pk, actor=alice)
    make_trade(alice, carol)
    assert trader_stats(user=alice).trades == 3


def test_the_count_is_the_stats_figure_in_one_query(history, alice, bob, django_assert_num_queries):
    with django_assert_num_queries(1):
        counted = completed_trades(user_id=alice.pk)
    assert counted == 3
    assert completed_trades(user_id=bob.pk) == 1


def test_trades_with_a_linked_account_do_not_count(history, alice, bob):
    # when bob, alice's buyer once, turns out to share her address
    accounts.account_links_record(user=alice, ip=HOME, device=None)
    accounts.account_links_record(user=bob, ip=HOME, device=None)
    # then neither counts that trade, as in the public stats
    assert trader_stats(user=alice).trades == 2
    assert completed_trades(user_id=alice.pk) == 2
    assert completed_trades(user_id=bob.pk) == 0


def test_the_book_names_the_viewers_count_for_each_requirement(history, alice, carol, dave):
    fund(dave, "BTC", "1")
    easy = make_offer(dave, amount="0.1", min_taker_trades=2)
    hard = make_offer(dave, amount="0.1", min_taker_trades=10)
    exact = make_offer(dave, amount="0.1", min_taker_trades=3)
    unmet = offers_unmet_for_viewer(offers=[easy, hard, exact], viewer=alice, short=True)
    assert unmet[easy.pk] == []
    assert unmet[exact.pk] == []
    assert unmet[hard.pk] == ["10+ completed trades (you: 3)"]
    # carol: her two sales to alice (her purchase from alice is still open)
    assert offers_unmet_for_viewer(offers=[exact], viewer=carol, short=True)[exact.pk] == [
        "3+ completed trades (you: 2)"
    ]


def test_a_take_needs_the_count_and_names_it(history, alice, dave):
    fund(dave, "BTC", "1")
    met = make_offer(dave, amount="0.1", min_taker_trades=3)
    unmet = make_offer(dave, amount="0.1", min_taker_trades=4)
    with pytest.raises(PermissionDenied, match="at least 4 completed trades; you have 3"):
        escrow.trade_open(offer_id=unmet.pk, taker=alice, amount="0.01")
    assert escrow.trade_open(offer_id=met.pk, taker=alice, amount="0.01").state == "funded"
