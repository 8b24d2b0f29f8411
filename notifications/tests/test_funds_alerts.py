"""Chain alerts reach the moderators once per condition; a user's funds news reaches the user."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache

from accounts.tests.factories import UserFactory
from ledger import alerts
from notifications.models import Notification

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def moderator(refdata):
    user = UserFactory(username="mod", is_staff=True, email="mod@example.com")
    user.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    return user


def test_an_alert_reaches_each_moderator_once_until_it_clears(
    moderator, alice, mailoutbox, outbound_inline
):
    cache.delete("ledger-alert:hot-wallet-low:ETH")
    assert alerts.moderators_alert(key="hot-wallet-low:ETH", text="Hot wallet low: 0.1 ETH")
    # the task that finds it again an instant later does not repeat it
    assert not alerts.moderators_alert(key="hot-wallet-low:ETH", text="Hot wallet low: 0.1 ETH")
    notes = Notification.objects.filter(kind=Notification.Kind.FUNDS)
    assert [(n.user, n.text) for n in notes] == [(moderator, "Hot wallet low: 0.1 ETH")]
    assert [m.to for m in mailoutbox] == [["mod@example.com"]]
    # once it is over, the next occurrence is news again
    alerts.moderators_alert_clear(key="hot-wallet-low:ETH")
    assert alerts.moderators_alert(key="hot-wallet-low:ETH", text="Hot wallet low again")
    assert Notification.objects.filter(kind=Notification.Kind.FUNDS).count() == 2


def test_a_users_funds_news_reaches_only_them(alice, bob):
    alerts.user_funds_news(user_id=alice.pk, text="Deposit of 1 ETH credited.")
    assert list(Notification.objects.values_list("user__username", "kind", "text")) == [
        ("alice", "funds", "Deposit of 1 ETH credited.")
    ]
