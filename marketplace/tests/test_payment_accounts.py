"""Saved payment accounts: each method's fields checked (IBAN check digits, BIC, phone, email,
Revtag), the holder's name against the verified name, ownership, offers naming them, and the
API and settings pages that manage them."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Profile, ProfileEvent
from accounts.selectors import profile_for
from accounts.services.verified_name import profile_verified_name_set
from accounts.tests.factories import reviewer
from common.errors import NotFound, PermissionDenied, ValidationFailed
from marketplace import services as market
from marketplace.models import Offer, PaymentAccount
from marketplace.payment_fields import clean_details, same_name
from marketplace.services import payment_accounts as pay
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db

IBAN = "DE89 3704 0044 0532 0130 00"


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def sepa(user, **details):
    values = {"holder_name": "Alice Martin", "iban": IBAN, "bic": "COBADEFFXXX", **details}
    return pay.payment_account_create(user=user, method="sepa", details=values)


def revolut(user, **details):
    values = {"holder_name": "Alice Martin", "revtag": "@alicem", **details}
    return pay.payment_account_create(user=user, method="revolut", details=values)


def verify_name(user, name: str) -> None:
    profile_for(user)
    Profile.objects.filter(user=user).update(verified_name=name)


def refused(exc: pytest.ExceptionInfo[ValidationFailed]) -> dict[str, list[str]]:
    return exc.value.fields


class TestFields:
    def test_iban_is_checked_by_its_check_digits_and_stored_compact(self, alice):
        account = sepa(alice, iban="de89 3704 0044 0532 0130 00", bic="cobadeffxxx")
        assert account.details == {
            "holder_name": "Alice Martin",
            "iban": "DE89370400440532013000",
            "bic": "COBADEFFXXX",
        }
        with pytest.raises(ValidationFailed) as exc:
            sepa(alice, iban="DE89 3704 0044 0532 0130 01")  # one digit off
        assert list(refused(exc)) == ["iban"]
        assert "check digits" in refused(exc)["iban"][0]
        assert exc.value.message.startswith("iban: ")

    def test_each_bad_field_is_named_and_nothing_is_saved(self, alice):
        with pytest.raises(ValidationFailed) as exc:
            pay.payment_account_create(
                user=alice,
                method="sepa",
                details={"holder_name": "4lice", "iban": "XX00", "bic": "nope", "colour": "red"},
            )
        assert set(refused(exc)) == {"holder_name", "iban", "bic", "colour"}
        assert not PaymentAccount.objects.exists()

    @pytest.mark.parametrize(
        ("method", "details", "field"),
        [
            ("revolut", {"holder_name": "Alice Martin"}, "revtag"),  # neither tag nor phone
            ("revolut", {"holder_name": "Alice Martin", "revtag": "@a b"}, "revtag"),
            ("revolut", {"holder_name": "Alice Martin", "phone": "0770 0900"}, "phone"),
            ("wise", {"holder_name": "Alice Martin", "email": "alice@"}, "email"),
            ("wise", {"holder_name": "Alice Martin"}, "email"),
            ("sepa", {"iban": IBAN}, "holder_name"),
        ],
    )
    def test_format_rules(self, alice, method, details, field):
        with pytest.raises(ValidationFailed) as exc:
            pay.payment_account_create(user=alice, method=method, details=details)
        assert field in refused(exc)

    def test_phone_tag_and_email_are_normalised(self, alice):
        account = revolut(alice, revtag="AliceM", phone="+44 (7700) 900-123")
        assert account.details["revtag"] == "@alicem"
        assert account.details["phone"] == "+447700900123"
        wise = pay.payment_account_create(
            user=alice,
            method="wise",
            details={"holder_name": "Alice Martin", "email": "Alice@Example.COM"},
        )
        assert wise.details["email"] == "Alice@example.com"

    def test_a_method_without_its_own_fields_takes_the_generic_ones(self, alice):
        values, errors = clean_details("some-new-method", {"holder_name": "Al Ice"})
        assert errors == {"details": "Required."}
        values, errors = clean_details(
            "some-new-method", {"holder_name": "Al Ice", "details": "Acc 123"}
        )
        assert (values, errors) == ({"holder_name": "Al Ice", "details": "Acc 123"}, {})

    def test_unknown_method_is_refused_by_name(self, alice):
        with pytest.raises(ValidationFailed) as exc:
            pay.payment_account_create(user=alice, method="carrier-pigeon", details={})
        assert list(refused(exc)) == ["method"]


class TestVerifiedName:
    def test_names_match_ignoring_case_accents_and_spacing(self):
        assert same_name("José  Pérez-Núñez", "jose perez nunez")
        assert same_name("ALICE MARTIN", "alice martin")
        assert not same_name("Alice Martin", "Alice Marten")

    def test_holder_must_be_the_verified_name(self, alice):
        verify_name(alice, "Alice Émilie Martin")
        with pytest.raises(ValidationFailed) as exc:
            sepa(alice, holder_name="Bob Stone")
        assert list(refused(exc)) == ["holder_name"]
        assert "Alice Émilie Martin" in refused(exc)["holder_name"][0]
        assert sepa(alice, holder_name="alice emilie  MARTIN").pk

    def test_an_edit_is_checked_against_it_too(self, alice):
        account = sepa(alice)
        verify_name(alice, "Alice Martin")
        with pytest.raises(ValidationFailed):
            pay.payment_account_update(
                account_id=account.pk, actor=alice, details={"holder_name": "Mallory"}
            )
        account.refresh_from_db()
        assert account.details["holder_name"] == "Alice Martin"

    def test_only_a_reviewer_sets_it_and_it_is_audited(self, alice, bob):
        with pytest.raises(PermissionDenied):
            profile_verified_name_set(user=alice, name="Alice Martin", actor=bob)
        checker = reviewer()
        profile_verified_name_set(user=alice, name=" Alice   Martin ", actor=checker)
        assert profile_for(alice).verified_name == "Alice Martin"
        event = ProfileEvent.objects.get(user=alice, actor=checker)
        assert event.detail == "verified name: Alice Martin"

    def test_a_moderator_sets_it_in_the_admin(self, alice):
        from disputes.tests.test_services import moderator

        mod = moderator()  # the Moderators group: view profiles, review KYC
        client = Client()
        client.force_login(mod)
        profile = profile_for(alice)
        response = client.post(
            "/admin/accounts/profile/",
            {
                "action": "set_verified_name",
                "_selected_action": [profile.pk],
                "apply": "1",
                "name": "Alice Martin",
            },
        )
        assert response.status_code == 302
        assert profile_for(alice).verified_name == "Alice Martin"
        with pytest.raises(ValidationFailed):
            sepa(alice, holder_name="Someone Else")


class TestOwnership:
    def test_others_cannot_edit_or_delete_an_account(self, alice, bob):
        account = sepa(alice)
        with pytest.raises(NotFound):
            pay.payment_account_update(account_id=account.pk, actor=bob, label="mine")
        with pytest.raises(NotFound):
            pay.payment_account_delete(account_id=account.pk, actor=bob)
        assert PaymentAccount.objects.filter(pk=account.pk, label="").exists()

    def test_edit_merges_fields_and_an_empty_optional_one_is_removed(self, alice):
        account = sepa(alice)
        pay.payment_account_update(account_id=account.pk, actor=alice, details={"bic": ""})
        account.refresh_from_db()
        assert account.details == {"holder_name": "Alice Martin", "iban": "DE89370400440532013000"}


class TestOffers:
    def test_a_sell_offer_names_one_account_per_method(self, alice):
        fund(alice)
        iban, tag = sepa(alice), revolut(alice)
        offer = make_offer(
            alice, payment_methods=["sepa", "revolut"], payment_accounts=[iban.pk, tag.pk]
        )
        assert set(offer.payment_accounts.all()) == {iban, tag}

        second = sepa(alice, bic="")
        with pytest.raises(ValidationFailed) as exc:
            make_offer(alice, payment_methods=["sepa"], payment_accounts=[iban.pk, second.pk])
        assert list(refused(exc)) == ["payment_accounts"]
        with pytest.raises(ValidationFailed):  # Revolut is not among the offer's methods
            make_offer(alice, payment_methods=["sepa"], payment_accounts=[tag.pk])

    def test_an_offer_cannot_name_someone_elses_account(self, alice, bob):
        fund(alice)
        with pytest.raises(ValidationFailed) as exc:
            make_offer(alice, payment_accounts=[sepa(bob, holder_name="Bob Stone").pk])
        assert "not one of yours" in refused(exc)["payment_accounts"][0]

    def test_a_buy_offer_names_none(self, alice):
        with pytest.raises(ValidationFailed) as exc:
            make_offer(alice, side="buy", payment_accounts=[sepa(alice).pk])
        assert list(refused(exc)) == ["payment_accounts"]

    def test_dropping_a_method_drops_its_account_and_deleting_an_account_unnames_it(self, alice):
        fund(alice)
        iban, tag = sepa(alice), revolut(alice)
        offer = make_offer(
            alice, payment_methods=["sepa", "revolut"], payment_accounts=[iban.pk, tag.pk]
        )
        market.offer_update(offer_id=offer.pk, actor=alice, payment_methods=["sepa"])
        assert list(offer.payment_accounts.all()) == [iban]
        pay.payment_account_delete(account_id=iban.pk, actor=alice)
        assert not offer.payment_accounts.exists()


class TestApi:
    def test_crud(self, alice, bob):
        client = api(alice)
        created = client.post(
            "/api/v1/payment-accounts/",
            {
                "method": "revolut",
                "label": "Main",
                "details": {"holder_name": "Alice Martin", "revtag": "alicem"},
            },
            format="json",
        )
        assert created.status_code == 201, created.json()
        body = created.json()
        assert body["method"] == "revolut"
        assert body["details"] == {"holder_name": "Alice Martin", "revtag": "@alicem"}
        url = f"/api/v1/payment-accounts/{body['id']}/"

        listed = client.get("/api/v1/payment-accounts/").json()
        assert [a["id"] for a in listed["results"]] == [body["id"]]
        assert api(bob).get(url).status_code == 404
        assert api(bob).get("/api/v1/payment-accounts/").json()["results"] == []

        patched = client.patch(url, {"details": {"phone": "+447700900123"}}, format="json")
        assert patched.status_code == 200
        assert patched.json()["details"]["phone"] == "+447700900123"

        assert api(bob).delete(url).status_code == 404
        assert client.delete(url).status_code == 204
        assert client.get(url).status_code == 404

    def test_bad_iban_answers_400_naming_the_field(self, alice):
        response = api(alice).post(
            "/api/v1/payment-accounts/",
            {"method": "sepa", "details": {"holder_name": "Alice Martin", "iban": "DE00 1234"}},
            format="json",
        )
        assert response.status_code == 400
        assert list(response.json()["error"]["fields"]) == ["iban"]

    def test_in_the_schema_with_an_example(self, alice):
        schema = APIClient().get("/api/schema/", {"format": "json"}).json()
        post = schema["paths"]["/api/v1/payment-accounts/"]["post"]
        content = post["requestBody"]["content"]["application/json"]
        assert "SEPA" in content["examples"]
        assert "iban" in post["description"]
        trade = schema["components"]["schemas"]["TradeOut"]["properties"]
        assert "payment_account" in trade
        assert "TradePaymentAccountOut" in schema["components"]["schemas"]


class TestSettingsPages:
    def test_add_edit_delete_in_the_browser_forms(self, alice):
        client = Client()
        client.force_login(alice)
        page = client.get("/settings/")
        assert b'id="payment-accounts"' in page.content

        bad = client.post(
            "/settings/payment-accounts/new/",
            {
                "method": "sepa",
                "holder_name": "Alice Martin",
                "iban": "DE89 3704 0044 0532 0130 01",
            },
        )
        assert bad.status_code == 400
        assert b"check digits" in bad.content
        good = client.post(
            "/settings/payment-accounts/new/",
            {"method": "sepa", "holder_name": "Alice Martin", "iban": IBAN, "label": "Main"},
        )
        assert good.status_code == 302
        account = PaymentAccount.objects.get(user=alice)
        assert b"DE89 3704 0044 0532 0130 00" in client.get("/settings/").content

        edited = client.post(
            f"/settings/payment-accounts/{account.pk}/edit/",
            {"holder_name": "Alice Martin", "iban": "GB82 WEST 1234 5698 7654 32", "label": "UK"},
        )
        assert edited.status_code == 302
        account.refresh_from_db()
        assert (account.label, account.details["iban"]) == ("UK", "GB82WEST12345698765432")

        assert client.post(f"/settings/payment-accounts/{account.pk}/delete/").status_code == 302
        assert not PaymentAccount.objects.exists()

    def test_someone_elses_account_pages_are_not_found(self, alice, bob):
        account = sepa(alice)
        client = Client()
        client.force_login(bob)
        assert client.get(f"/settings/payment-accounts/{account.pk}/edit/").status_code == 404
        assert client.post(f"/settings/payment-accounts/{account.pk}/delete/").status_code == 404
        assert PaymentAccount.objects.filter(pk=account.pk).exists()


def test_the_demo_data_has_alices_accounts_on_her_sell_offers(refdata):
    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())  # safe to run again
    offer = Offer.objects.get(maker__username="alice", asset__code="BTC", side="sell")
    named = {a.method.code: a.details for a in offer.payment_accounts.all()}
    assert named["revolut"]["revtag"] == "@alicem"
    assert set(named) == {"sepa", "revolut"}
    assert PaymentAccount.objects.filter(user__username="alice").count() == 3
