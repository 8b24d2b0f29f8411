"""The notification list with its unread badge, and the wallet's ledger proof page."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from escrow import services as escrow
from ledger.models import Transfer
from ledger.services import checkpoint_create
from marketplace.tests.factories import make_trade
from notifications.models import Notification
from notifications.selectors import (
    UNREAD_BADGE_CAP,
    notification_unread_count,
    notification_unread_counts,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("trade_news_inline")]


def test_unread_badge_and_list(client, alice, bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        trade = make_trade(alice, bob)
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    client.force_login(alice)
    unread = Notification.objects.filter(user=alice, read_at__isnull=True).count()
    assert unread >= 1
    page = client.get("/notifications/").content.decode()
    assert f"{unread} unread" in page
    first = Notification.objects.filter(user=alice).first()
    opened = client.post(f"/notifications/{first.pk}/read/")
    assert opened.status_code == 302
    assert opened["Location"] == f"/trades/{trade.pk}/"
    first.refresh_from_db()
    assert first.read_at is not None


def test_the_badge_counts_up_to_99_then_says_99_plus(client, alice, bob, carol):
    # given bob has 3 unread notifications and alice 150 (a bot that never reads them)
    Notification.objects.bulk_create(
        [Notification(user=bob, kind="paid", text=f"n{i}") for i in range(3)]
        + [Notification(user=alice, kind="paid", text=f"n{i}") for i in range(150)]
    )
    # then bob's header counts them exactly, alice's says "99+"
    client.force_login(bob)
    assert ">3</span>" in client.get("/notifications/").content.decode()
    client.force_login(alice)
    page = client.get("/notifications/").content.decode()
    assert 'aria-label="More than 99 unread">99+</span>' in page
    # and the live events' counts stop after 100 rows, for everyone in one query
    with CaptureQueriesContext(connection) as queries:
        counts = notification_unread_counts(
            user_ids=[alice.pk, bob.pk, carol.pk], cap=UNREAD_BADGE_CAP
        )
    assert counts == {alice.pk: 100, bob.pk: 3, carol.pk: 0}
    assert len(queries) == 1
    # while the API's count stays exact
    assert notification_unread_count(user=alice) == 150


def test_wallet_proof_page(client, alice, bob, carol):
    make_trade(alice, bob)
    checkpoint_create()
    mine = Transfer.objects.filter(credit_account__user=alice).exclude(seq=None).first()
    client.force_login(alice)
    assert "verify" in client.get("/wallet/").content.decode()
    page = client.get(f"/wallet/proof/{mine.seq}/").content.decode()
    assert "Verified." in page
    client.force_login(carol)
    assert client.get(f"/wallet/proof/{mine.seq}/").status_code == 404


@pytest.mark.parametrize("language", ["en", "es", "pt-br", "ru", "ar"])
def test_the_live_badge_speaks_each_count_as_the_header_does(language):
    # static/js/live.js labels the badge it redraws from what {% live_socket %} gives it: the
    # language's forms of "N unread" and which form each count from 1 to 99 takes
    import json

    from django.utils.translation import gettext, ngettext, override

    from notifications.templatetags.live import unread_labels

    forms_json, plural, many = unread_labels(language)
    forms = json.loads(forms_json)
    assert len(plural) == 99
    with override(language):
        for count in range(1, 100):
            header = ngettext("%(counter)s unread", "%(counter)s unread", count) % {
                "counter": count
            }
            live = forms[int(plural[count - 1])].replace("%(counter)s", str(count))
            assert live == header, (language, count)
        assert many == gettext("More than 99 unread")
    if language == "ru":  # 1 and 21 take one form, 5 to 20 another
        assert plural[0] == plural[20] != plural[4] == plural[10] == plural[19]


def test_the_page_gives_the_live_script_the_badge_s_words(client, alice, settings):
    settings.LIVE_ENABLED = True
    client.force_login(alice)
    page = client.get("/notifications/", HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert 'data-text-unread-many="Más de 99 sin leer"' in page
    assert 'data-unread-forms="[&quot;%(counter)s sin leer&quot;]"' in page
    assert 'data-unread-plural="' + "0" * 99 + '"' in page
