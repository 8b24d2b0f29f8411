"""The settings page (verification, API keys, trusted and blocked lists), who may see KYC
files, the KYC review queue in the admin, and the KYC and relations API."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import services
from accounts.models import ApiKey, KycDocument, Profile, ProfileEvent, TraderRelation
from accounts.selectors import profile_for
from accounts.tests.factories import DEFAULT_LIMITS, PDF, PNG, UserFactory, reviewer, upload

pytestmark = pytest.mark.django_db


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        key = Token.objects.get_or_create(user=user)[0].key
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def document(bob):
    return services.kyc_document_submit(
        user=bob, kind="passport", file=upload(PNG, "passport.png"), requested_tier=1
    )


# --- who may see a KYC file -------------------------------------------------------------------


class TestKycFilePermissions:
    """Owner and reviewers get the file; other users, staff without `review_kyc` and anonymous
    visitors get 404 (no hint the document exists)."""

    @pytest.mark.parametrize(
        ("who", "status"),
        [
            ("owner", 200),
            ("reviewer", 200),
            ("superuser", 200),
            ("other user", 404),
            ("staff without review_kyc", 404),
            ("anonymous", 404),
        ],
    )
    def test_browser_matrix(self, client, document, carol, who, status):
        user = {
            "owner": document.user,
            "reviewer": reviewer(),
            "superuser": UserFactory(username="root", is_staff=True, is_superuser=True),
            "other user": carol,
            "staff without review_kyc": reviewer("staff", perm=False),
            "anonymous": None,
        }[who]
        if user is not None:
            client.force_login(user)
        response = client.get(reverse("kyc_file", args=[document.pk]))
        assert response.status_code == status
        if status == 200:
            assert b"".join(response.streaming_content) == PNG
            assert response["Content-Type"] == "image/png"
            assert "no-store" in response["Cache-Control"]
        # a reviewer's reading is written to the owner's audit trail; the owner's own is not
        reads = ProfileEvent.objects.filter(user=document.user, action="kyc_file_read")
        assert reads.count() == (1 if status == 200 and who != "owner" else 0)

    def test_unknown_document_is_404_too(self, client, bob):
        client.force_login(bob)
        assert client.get(reverse("kyc_file", args=[999999])).status_code == 404

    def test_api_lists_only_your_own(self, document, carol):
        mine = api(document.user).get("/api/v1/kyc/documents/").json()["results"]
        assert [d["id"] for d in mine] == [document.pk]
        assert mine[0]["file_url"] == reverse("kyc_file", args=[document.pk])
        assert api(carol).get("/api/v1/kyc/documents/").json()["results"] == []
        assert api().get("/api/v1/kyc/documents/").status_code == 401

    def test_api_delete_matrix(self, document, carol):
        staff = reviewer()
        # a stranger and even a reviewer get 404: deleting is the owner's
        assert api(carol).delete(f"/api/v1/kyc/documents/{document.pk}/").status_code == 404
        assert api(staff).delete(f"/api/v1/kyc/documents/{document.pk}/").status_code == 404
        # the owner: not while pending
        pending = api(document.user).delete(f"/api/v1/kyc/documents/{document.pk}/")
        assert pending.status_code == 409
        services.kyc_document_review(
            document_id=document.pk, actor=staff, approve=False, reason="Expired passport"
        )
        gone = api(document.user).delete(f"/api/v1/kyc/documents/{document.pk}/")
        assert gone.status_code == 204
        assert not KycDocument.objects.exists()

    def test_the_file_is_not_under_a_public_url(self, document):
        with pytest.raises(ValueError, match=r"(?i)url"):
            document.file.url  # noqa: B018


# --- the API of documents and relations -------------------------------------------------------


class TestApi:
    def test_submit_a_document(self, bob):
        created = api(bob).post(
            "/api/v1/kyc/documents/",
            {"kind": "id_card", "requested_tier": "1", "file": upload(PDF, "id.pdf")},
            format="multipart",
        )
        assert created.status_code == 201, created.json()
        body = created.json()
        assert (body["kind"], body["status"], body["content_type"]) == (
            "id_card",
            "pending",
            "application/pdf",
        )
        bad = api(bob).post(
            "/api/v1/kyc/documents/",
            {"kind": "id_card", "requested_tier": "1", "file": upload(b"MZ\x90\x00", "x.pdf")},
            format="multipart",
        )
        assert bad.status_code == 400
        assert "file" in bad.json()["error"]["fields"]
        assert KycDocument.objects.count() == 1

    def test_relations(self, alice, bob):
        client = api(alice)
        trusted = client.post("/api/v1/relations/", {"username": "bob", "kind": "trusted"}, "json")
        assert trusted.status_code == 201
        assert trusted.json()["kind"] == "trusted"
        listed = client.get("/api/v1/relations/?kind=trusted").json()["results"]
        assert [r["username"] for r in listed] == ["bob"]
        assert client.get("/api/v1/relations/?kind=blocked").json()["results"] == []
        self_block = client.post(
            "/api/v1/relations/", {"username": "alice", "kind": "blocked"}, "json"
        )
        assert self_block.status_code == 400
        assert "username" in self_block.json()["error"]["fields"]
        rid = trusted.json()["id"]
        assert api(bob).delete(f"/api/v1/relations/{rid}/").status_code == 404
        assert client.delete(f"/api/v1/relations/{rid}/").status_code == 204
        assert not TraderRelation.objects.exists()


# --- the settings page ------------------------------------------------------------------------


class TestSettingsPage:
    def test_login_required(self, client, refdata):
        response = client.get(reverse("settings"))
        assert response.status_code == 302
        assert reverse("login") in response.url

    def test_shows_tier_limits_and_documents(self, client, document, settings):
        settings.KYC_LIMITS_EUR = DEFAULT_LIMITS
        client.force_login(document.user)
        html = client.get(reverse("settings")).content.decode()
        assert "Unverified" in html
        assert "1,000 EUR" in html  # per trade at tier 0
        assert "Waiting for review" in html
        assert reverse("kyc_file", args=[document.pk]) in html

    def test_upload_and_errors(self, client, bob):
        client.force_login(bob)
        response = client.post(
            reverse("kyc_upload"),
            {"kind": "passport", "requested_tier": "1", "file": upload(PNG, "p.png")},
        )
        assert response.status_code == 302
        assert KycDocument.objects.get().user == bob
        bad = client.post(
            reverse("kyc_upload"),
            {"kind": "passport", "requested_tier": "1", "file": upload(b"hello", "p.png")},
        )
        assert bad.status_code == 400
        assert "Only" in bad.content.decode()
        assert KycDocument.objects.count() == 1

    def test_rejected_document_shows_the_reason_and_can_be_deleted(self, client, document):
        services.kyc_document_review(
            document_id=document.pk, actor=reviewer(), approve=False, reason="Blurred photo"
        )
        client.force_login(document.user)
        html = client.get(reverse("settings")).content.decode()
        assert "Blurred photo" in html
        assert reverse("kyc_delete", args=[document.pk]) in html
        client.post(reverse("kyc_delete", args=[document.pk]))
        assert not KycDocument.objects.exists()

    def test_api_key_is_shown_once_and_can_be_revoked(self, client, bob):
        client.force_login(bob)
        response = client.post(
            reverse("settings_key_create"),
            {"name": "grid bot", "scopes": ["read", "trade"], "password": "demo-pass-123"},
        )
        html = response.content.decode()
        key = ApiKey.objects.get(user=bob)
        raw = html.split('id="new-api-key">')[1].split("<")[0]
        assert raw.startswith(key.prefix)
        assert key.scopes == ["read", "trade"]
        assert api().get("/api/v1/wallets/", HTTP_AUTHORIZATION=f"Token {raw}").status_code == 200
        # shown once: the next page load has only the prefix
        assert raw not in client.get(reverse("settings")).content.decode()
        client.post(reverse("settings_key_revoke", args=[key.pk]))
        key.refresh_from_db()
        assert not key.is_active
        assert api().get("/api/v1/wallets/", HTTP_AUTHORIZATION=f"Token {raw}").status_code == 401

    def test_api_key_needs_a_scope(self, client, bob):
        client.force_login(bob)
        response = client.post(reverse("settings_key_create"), {"name": "x", "scopes": []})
        assert response.status_code == 400
        assert not ApiKey.objects.exists()

    def test_someone_elses_key_is_404(self, client, alice, bob):
        key, _ = services.api_key_create(user=alice, name="a", scopes=["read"])
        client.force_login(bob)
        assert client.post(reverse("settings_key_revoke", args=[key.pk])).status_code == 404
        key.refresh_from_db()
        assert key.is_active

    def test_trusted_and_blocked_lists(self, client, alice, bob, carol):
        client.force_login(alice)
        client.post(reverse("relation_add"), {"username": "bob", "kind": "trusted"})
        client.post(reverse("relation_add"), {"username": "carol", "kind": "blocked"})
        html = client.get(reverse("settings")).content.decode()
        trusted, blocked = html.split(">Trusted</h3>")[1].split(">Blocked</h3>")
        assert "bob" in trusted
        assert "carol" not in trusted
        assert "carol" in blocked.split("Add a trader")[0]
        mine = client.post(reverse("relation_add"), {"username": "alice", "kind": "trusted"})
        assert mine.status_code == 400
        assert "trust yourself" in mine.content.decode()
        relation = TraderRelation.objects.get(other=carol)
        client.post(reverse("relation_remove", args=[relation.pk]))
        assert list(TraderRelation.objects.values_list("other__username", flat=True)) == ["bob"]

    def test_block_from_a_profile(self, client, alice, bob):
        client.force_login(alice)
        page = client.get(reverse("profile", args=["bob"])).content.decode()
        assert ">Block</button>" in page
        response = client.post(
            reverse("relation_add"), {"username": "bob", "kind": "blocked", "next": "/u/bob/"}
        )
        assert response.url == "/u/bob/"
        assert "Blocked by you" in client.get("/u/bob/").content.decode()

    def test_frozen_account_is_told_on_settings(self, client, bob):
        services.profile_freeze(user=bob, actor=None, reason="Chargebacks")
        client.force_login(bob)
        assert (
            "Your account is frozen: Chargebacks."
            in client.get(reverse("settings")).content.decode()
        )


def test_signup_creates_the_profile(client, refdata):
    client.post(
        reverse("signup"),
        {
            "username": "dave",
            "email": "dave@example.test",
            "password1": "a-long-Pass-phrase-9",
            "password2": "a-long-Pass-phrase-9",
        },
    )
    dave = get_user_model().objects.get(username="dave")
    assert Profile.objects.get(user=dave).kyc_tier == 0


# --- the KYC review queue in the admin --------------------------------------------------------


class TestAdminQueue:
    @pytest.fixture
    def staff(self):
        user = reviewer()
        for codename in ("view_profile",):
            user.user_permissions.add(Permission.objects.get(codename=codename))
        return get_user_model().objects.get(pk=user.pk)

    def test_reviewer_sees_the_queue_with_a_checked_link(self, client, staff, document):
        client.force_login(staff)
        html = client.get(reverse("admin:accounts_kycdocument_changelist")).content.decode()
        assert "bob" in html
        assert reverse("kyc_file", args=[document.pk]) in html
        page = client.get(reverse("admin:accounts_kycdocument_change", args=[document.pk]))
        assert page.status_code == 200

    def test_staff_without_the_permission_doesnt(self, client, document):
        client.force_login(reviewer("staff", perm=False))
        response = client.get(reverse("admin:accounts_kycdocument_changelist"))
        assert response.status_code == 403

    def test_approve_action_raises_the_tier(self, client, staff, document):
        client.force_login(staff)
        response = client.post(
            reverse("admin:accounts_kycdocument_changelist"),
            {"action": "approve", "_selected_action": [document.pk]},
        )
        assert response.status_code == 302
        document.refresh_from_db()
        assert (document.status, document.reviewed_by) == ("approved", staff)
        assert profile_for(document.user).kyc_tier == 1

    def test_reject_action_asks_for_a_reason(self, client, staff, document):
        client.force_login(staff)
        url = reverse("admin:accounts_kycdocument_changelist")
        form = client.post(url, {"action": "reject", "_selected_action": [document.pk]})
        assert form.status_code == 200
        assert 'name="reason"' in form.content.decode()
        document.refresh_from_db()
        assert document.status == "pending"
        done = client.post(
            url,
            {
                "action": "reject",
                "_selected_action": [document.pk],
                "apply": "1",
                "reason": "The name doesn't match the account.",
            },
        )
        assert done.status_code == 302
        document.refresh_from_db()
        assert (document.status, document.review_reason) == (
            "rejected",
            "The name doesn't match the account.",
        )

    def test_freeze_from_the_admin(self, client, bob):
        mod = UserFactory(username="mod", is_staff=True)
        for codename in ("view_profile", "change_profile", "freeze_account"):
            mod.user_permissions.add(Permission.objects.get(codename=codename))
        profile = profile_for(bob)
        client.force_login(mod)
        client.post(
            reverse("admin:accounts_profile_changelist"),
            {
                "action": "freeze",
                "_selected_action": [profile.pk],
                "apply": "1",
                "reason": "Stolen funds report",
            },
        )
        profile.refresh_from_db()
        assert (profile.is_frozen, profile.frozen_reason) == (True, "Stolen funds report")
        client.post(
            reverse("admin:accounts_profile_changelist"),
            {"action": "unfreeze", "_selected_action": [profile.pk]},
        )
        profile.refresh_from_db()
        assert not profile.is_frozen
