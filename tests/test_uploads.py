"""Private files go out under a name that matches their sniffed type; only images inline, and
then with nosniff and a sandboxing CSP (security finding 14). Four views serve them: the trade
room's attachment, its API twin, dispute evidence and a KYC document."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.services import kyc_document_submit
from common.files import check_upload, name_for_type
from disputes import services as disputes
from escrow import services as escrow
from escrow.models import Trade, TradeMessage
from marketplace.tests.factories import make_trade

pytestmark = pytest.mark.django_db

POLYGLOT = b"GIF89a<html><script>alert(document.cookie)</script></html>"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
PDF = b"%PDF-1.4\n" + b"\x00" * 32
CSP = "default-src 'none'; sandbox"


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _assert_inline_image(response, *, content_type: str, filename: str) -> None:
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"] == f'inline; filename="{filename}"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == CSP


def _assert_download(response, *, filename: str) -> None:
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == CSP


def _chat_file(trade: Trade, user, name: str, content: bytes) -> TradeMessage:
    return escrow.trade_message_send(
        trade_id=trade.pk, actor=user, attachment=SimpleUploadedFile(name, content)
    )


class TestNames:
    @pytest.mark.parametrize(
        ("given", "content_type", "expected"),
        [
            ("x.html", "image/gif", "x.gif"),
            ("proof.PNG", "image/png", "proof.png"),
            ("scan.jpeg.svg", "image/jpeg", "scan.jpeg.jpg"),
            ("../../etc/passwd", "application/pdf", "passwd.pdf"),
            ('a"b;c<d>.html', "image/webp", "abcd.webp"),
            ("", "image/png", "attachment.png"),
            (".htaccess", "video/mp4", "attachment.mp4"),
        ],
    )
    def test_a_name_takes_the_extension_of_its_sniffed_type(self, given, content_type, expected):
        # given an uploaded name and the type its content was sniffed as
        # when / then
        assert name_for_type(given, content_type) == expected

    def test_check_upload_renames_the_upload(self):
        # given a GIF that calls itself x.html
        upload = SimpleUploadedFile("x.html", POLYGLOT, content_type="text/html")

        # when it is checked
        content_type = check_upload(
            upload, field="attachment", allowed={"image/gif"}, max_bytes=1024
        )

        # then it is a GIF named x.gif
        assert (content_type, upload.name) == ("image/gif", "x.gif")


class TestTradeChat:
    def test_a_gif_named_html_is_stored_and_served_as_a_sandboxed_gif(self, alice, bob):
        # given bob attaches a GIF/HTML polyglot named x.html
        trade = make_trade(alice, bob)
        message = _chat_file(trade, bob, "x.html", POLYGLOT)

        # when alice opens it in the room and through the API
        room = _browser(alice).get(f"/trades/{trade.pk}/chat/{message.pk}/attachment/")
        api = _api(alice).get(f"/api/v1/trades/{trade.pk}/messages/{message.pk}/attachment/")

        # then it is stored under .gif and served inline as x.gif, sniffing off, sandboxed
        assert message.attachment.name.endswith(".gif")
        assert message.attachment_name == "x.gif"
        _assert_inline_image(room, content_type="image/gif", filename="x.gif")
        _assert_inline_image(api, content_type="image/gif", filename="x.gif")

    def test_an_old_row_named_html_is_served_under_its_sniffed_type(self, alice, bob):
        # given a message stored before the fix, under the name the user chose
        trade = make_trade(alice, bob)
        message = _chat_file(trade, bob, "x.gif", POLYGLOT)
        TradeMessage.objects.filter(pk=message.pk).update(attachment_name="x.html")

        # when alice opens it
        response = _browser(alice).get(f"/trades/{trade.pk}/chat/{message.pk}/attachment/")

        # then the name follows the content, not the row
        _assert_inline_image(response, content_type="image/gif", filename="x.gif")

    def test_a_pdf_is_a_download(self, alice, bob):
        # given bob attaches a PDF named receipt.html
        trade = make_trade(alice, bob)
        message = _chat_file(trade, bob, "receipt.html", PDF)

        # when alice opens it in the room and through the API
        room = _browser(alice).get(f"/trades/{trade.pk}/chat/{message.pk}/attachment/")
        api = _api(alice).get(f"/api/v1/trades/{trade.pk}/messages/{message.pk}/attachment/")

        # then both are downloads named receipt.pdf
        _assert_download(room, filename="receipt.pdf")
        _assert_download(api, filename="receipt.pdf")


def _dispute(alice, bob):
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    Trade.objects.filter(pk=trade.pk).update(paid_at=timezone.now() - timedelta(minutes=11))
    return disputes.dispute_open(
        trade_id=trade.pk, actor=bob, category="paid_not_released", text="Paid, no release."
    )


class TestEvidence:
    @pytest.mark.parametrize(
        ("name", "content", "inline", "served_as"),
        [
            pytest.param("receipt.svg", POLYGLOT, True, "receipt.gif", id="gif-named-svg"),
            pytest.param("statement.html", PDF, False, "statement.pdf", id="pdf-named-html"),
        ],
    )
    def test_evidence_is_served_under_its_sniffed_type(
        self, alice, bob, name, content, inline, served_as
    ):
        # given bob's evidence under a misleading name
        dispute = _dispute(alice, bob)
        evidence = disputes.evidence_submit(
            dispute_id=dispute.pk, actor=bob, file=SimpleUploadedFile(name, content)
        )

        # when alice opens it
        response = _browser(alice).get(f"/disputes/evidence/{evidence.pk}/")

        # then it goes out under the sniffed type's name, and only an image inline
        assert evidence.file.name.endswith(served_as.rsplit(".", 1)[1])
        if inline:
            _assert_inline_image(response, content_type="image/gif", filename=served_as)
        else:
            _assert_download(response, filename=served_as)


class TestKycDocument:
    @pytest.mark.parametrize(
        ("name", "content", "inline", "served_as"),
        [
            pytest.param("passport.html", PNG, True, "passport.png", id="png-named-html"),
            pytest.param("bill.exe", PDF, False, "bill.pdf", id="pdf-named-exe"),
        ],
    )
    def test_a_kyc_document_is_served_under_its_sniffed_type(
        self, alice, name, content, inline, served_as
    ):
        # given alice's document under a misleading name
        document = kyc_document_submit(
            user=alice, kind="passport", file=SimpleUploadedFile(name, content), requested_tier=1
        )

        # when she downloads it
        response = _browser(alice).get(f"/settings/kyc/{document.pk}/file/")

        # then it goes out under the sniffed type's name, and only an image inline
        assert document.file.name.endswith(served_as.rsplit(".", 1)[1])
        assert response["Cache-Control"] == "private, no-store"
        if inline:
            _assert_inline_image(response, content_type="image/png", filename=served_as)
        else:
            _assert_download(response, filename=served_as)
