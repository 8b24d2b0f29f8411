"""The reference data of a world market (issue 20): every ISO 4217 currency with its minor units,
fiat amounts held to them, moderators enabling currencies, and the payment-method catalogue
with a validated field for each thing a payer needs."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from babel.numbers import list_currencies
from django.core.management import call_command
from django.urls import reverse

from accounts.selectors import profile_for
from accounts.tests.factories import UserFactory
from common.errors import ValidationFailed
from escrow import services as escrow_services
from escrow.models import Trade
from marketplace.currencies import ENABLED_BY_DEFAULT
from marketplace.models import FiatCurrency, Offer, PaymentMethod
from marketplace.payment_catalog import CATALOG
from marketplace.payment_fields import (
    COUNTRY_NAMES,
    KINDS,
    clean_details,
    fields_for,
    nuban_check_digit,
)
from marketplace.selectors import payment_methods_for_viewer
from marketplace.services import payment_accounts as pay
from marketplace.services.reference import (
    fiat_currencies_set_active,
    fiat_currencies_sync,
    payment_methods_sync,
)
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db


# --- the currency table ------------------------------------------------------------------------


class TestCurrencies:
    def test_every_active_iso_currency_with_its_minor_units(self, refdata):
        table = dict(FiatCurrency.objects.values_list("code", "precision"))
        assert (table["JPY"], table["KWD"], table["EUR"]) == (0, 3, 2)
        assert (table["BHD"], table["CLP"], table["BRL"], table["INR"]) == (3, 0, 2, 2)
        assert len(table) >= 150
        # Historic currencies are not loaded.
        assert not {"DEM", "FRF", "ESP", "VEB"} & set(table)

    def test_only_a_few_are_enabled(self, refdata):
        active = set(FiatCurrency.objects.filter(is_active=True).values_list("code", flat=True))
        assert active == set(ENABLED_BY_DEFAULT)
        assert FiatCurrency.objects.get(code="KWD").name == "Kuwaiti Dinar"

    def test_sync_again_changes_nothing_and_keeps_moderators_choices(self, refdata):
        # given a moderator's choice
        fiat_currencies_set_active(codes=["JPY"], active=True)
        fiat_currencies_set_active(codes=["NGN"], active=False)
        # when the sync runs again (a later migration, the command)
        fiats, methods = fiat_currencies_sync(), payment_methods_sync()
        # then
        assert (fiats.created, fiats.updated, methods.created, methods.updated) == (0, 0, 0, 0)
        assert FiatCurrency.objects.get(code="JPY").is_active
        assert not FiatCurrency.objects.get(code="NGN").is_active

    def test_command_reports_what_it_did(self, refdata):
        out = StringIO()
        call_command("sync_reference_data", stdout=out)
        assert out.getvalue().strip() == (
            "Fiat currencies: 0 created, 0 renamed. Payment methods: 0 created, 0 updated."
        )


class TestAdminEnablesCurrencies:
    @pytest.fixture
    def moderator(self, client, refdata):
        client.force_login(UserFactory(username="mod", is_staff=True, is_superuser=True))
        return client

    def act(self, client, action, *codes):
        ids = list(FiatCurrency.objects.filter(code__in=codes).values_list("pk", flat=True))
        return client.post(
            reverse("admin:marketplace_fiatcurrency_changelist"),
            {"action": action, "_selected_action": ids},
            follow=True,
        )

    def test_enable_then_disable(self, moderator):
        # when a moderator enables JPY and KWD
        page = self.act(moderator, "enable_currencies", "JPY", "KWD")
        # then they are traded, and the offer form offers them
        assert "2 currencies enabled." in page.content.decode()
        assert set(
            FiatCurrency.objects.filter(code__in=["JPY", "KWD"], is_active=True).values_list(
                "code", flat=True
            )
        ) == {"JPY", "KWD"}
        # when they disable JPY
        page = self.act(moderator, "disable_currencies", "JPY")
        assert "1 currency disabled." in page.content.decode()
        assert not FiatCurrency.objects.get(code="JPY").is_active
        assert FiatCurrency.objects.get(code="KWD").is_active

    def test_a_disabled_currency_takes_no_new_offer(self, moderator, alice):
        self.act(moderator, "disable_currencies", "NGN")
        fund(alice)
        with pytest.raises(ValidationFailed) as exc:
            make_offer(alice, fiat="NGN", min_fiat="1000", max_fiat="5000")
        assert exc.value.fields == {"fiat": ["Unknown fiat currency."]}

    def test_the_changelist_lists_and_searches(self, moderator):
        page = moderator.get(reverse("admin:marketplace_fiatcurrency_changelist"), {"q": "dinar"})
        html = page.content.decode()
        assert "KWD" in html
        assert "JPY" not in html
        methods = moderator.get(reverse("admin:marketplace_paymentmethod_changelist"), {"q": "BR"})
        assert "Pix" in methods.content.decode()


# --- fiat amounts at their currency's minor units -------------------------------------------


@pytest.fixture
def yen_and_dinar(refdata):
    fiat_currencies_set_active(codes=["JPY", "KWD"], active=True)


class TestMinorUnits:
    def test_a_yen_limit_with_decimals_is_refused_naming_field_and_rule(self, alice, yen_and_dinar):
        fund(alice)
        with pytest.raises(ValidationFailed) as exc:
            make_offer(alice, fiat="JPY", price="14000000", min_fiat="1500.5", max_fiat="90000")
        rule = "JPY has no minor unit: whole Japanese yen only (no decimals)."
        assert exc.value.message == f"min_fiat: {rule}"
        assert exc.value.fields == {"min_fiat": [rule]}
        assert not Offer.objects.filter(maker=alice).exists()

    def test_whole_yen_and_trailing_zeros_are_fine(self, alice, yen_and_dinar):
        fund(alice)
        offer = make_offer(
            alice, fiat="JPY", price="14000000", min_fiat="1500.00", max_fiat="90000"
        )
        offer.refresh_from_db()
        assert (offer.min_fiat, offer.max_fiat) == (Decimal(1500), Decimal(90000))

    def test_taking_by_a_yen_amount_with_decimals_changes_nothing(self, alice, bob, yen_and_dinar):
        # given a yen offer
        fund(alice)
        offer = make_offer(alice, fiat="JPY", price="14000000", min_fiat="1000", max_fiat="90000")
        # when bob asks for 15000.5 yen
        with pytest.raises(ValidationFailed) as exc:
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="15000.5")
        # then it is refused by name and rule, and nothing moved
        assert exc.value.fields == {
            "fiat_amount": ["JPY has no minor unit: whole Japanese yen only (no decimals)."]
        }
        offer.refresh_from_db()
        assert offer.available == Decimal("0.5")
        assert not Trade.objects.exists()
        # and whole yen opens a trade for exactly that sum
        trade = escrow_services.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="15000")
        trade.refresh_from_db()
        assert trade.fiat_amount == Decimal(15000)

    def test_a_trade_by_asset_amount_is_rounded_to_whole_yen(self, alice, bob, yen_and_dinar):
        fund(alice)
        offer = make_offer(alice, fiat="JPY", price="14000000.5", min_fiat="1000", max_fiat="90000")
        trade = escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.0001234")
        trade.refresh_from_db()
        # 0.0001234 x 14,000,000.5 = 1727.60006..., half up to the yen
        assert trade.fiat_amount == Decimal(1728)

    def test_dinar_has_three_places_and_keeps_them(self, alice, yen_and_dinar):
        fund(alice)
        with pytest.raises(ValidationFailed) as exc:
            make_offer(alice, fiat="KWD", price="28000", min_fiat="10.1234", max_fiat="500")
        assert exc.value.fields == {
            "min_fiat": ["KWD has 3 decimal places: at most 3, e.g. 12.345."]
        }
        offer = make_offer(alice, fiat="KWD", price="28000", min_fiat="10.125", max_fiat="500")
        offer.refresh_from_db()
        assert offer.min_fiat == Decimal("10.125")  # the column keeps the third place

    def test_euro_cents_are_two_places(self, alice):
        fund(alice)
        with pytest.raises(ValidationFailed) as exc:
            make_offer(alice, min_fiat="10.001")
        assert exc.value.fields == {
            "min_fiat": ["EUR has 2 decimal places: at most 2, e.g. 123.45."]
        }

    def test_the_book_refuses_a_yen_amount_with_decimals(self, client, yen_and_dinar):
        page = client.get(reverse("home"), {"fiat": "JPY", "amount": "1000.5"})
        assert "JPY has no minor unit" in page.content.decode()


# --- payment methods ---------------------------------------------------------------------------

# One good and one bad value for every field kind; a kind missing here fails a test below.
EXAMPLES: dict[str, tuple[str, str]] = {
    "name": ("Ada Obi", "Ada 0bi"),
    "iban": ("DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 01"),
    "iban_nl": ("NL91 ABNA 0417 1643 00", "DE89 3704 0044 0532 0130 00"),
    "bic": ("COBADEFFXXX", "COBA1"),
    "email": ("ada@example.com", "ada@"),
    "phone": ("+256 712 345 678", "0712 345"),
    "tag": ("@ada_o", "@a b"),
    "sort_code": ("12-34-56", "12-34-5"),
    "uk_account": ("31926819", "3192681"),
    "text": ("Access Bank", "x" * 201),
    "city": ("São Paulo", "12345"),
    "country": ("ng", "XX"),
    "aba_routing": ("011000015", "011000016"),
    "cpf": ("390.533.447-05", "390.533.447-06"),
    "cnpj": ("11.222.333/0001-81", "11.222.333/0001-82"),
    "cbu": ("2850590940090418135201", "2850590940090418135202"),
    "abn": ("51 824 753 556", "51 824 753 557"),
    "card": ("4111 1111 1111 1111", "4111 1111 1111 1112"),
    "clabe": ("002010077777777771", "002010077777777772"),
    "pix_key": ("390.533.447-05", "390.533.447-06"),
    "us_account": ("000123456789", "123"),
    "ifsc": ("sbin0001234", "SBIN1001234"),
    "in_account": ("123456789012", "12345"),
    "upi_vpa": ("Ada.Obi@okaxis", "ada.obi@"),
    "nuban": ("0000014579", "000001457"),
    "ng_bank_code": ("011", "11"),
    "bank_account": ("1234567890", "12345"),
    "bsb": ("062-000", "06200"),
    "au_account": ("12345678", "1234"),
    "alias_ar": ("ada.obi.mp", "ada"),
    "uen": ("201912345K", "2019K"),
    "fps_id": ("1234567", "123456"),
    "yoomoney": ("410011234567890", "510011234567890"),
    "perfect_money": ("u1234567", "X1234567"),
    "payeer": ("P1234567", "1234567"),
    "wechat_id": ("ada_obi1", "1ada"),
    "instapay": ("ada.obi@instapay", "ada@bank"),
    "cashtag": ("$ada", "$1ada"),
    "handle": ("@Ada-Obi", "@ada"),
    "phone_us": ("+1 (212) 555-0123", "+1 112 555 0123"),
    "phone_br": ("+55 11 91234 5678", "+55 11 1234 5678"),
    "phone_ke": ("0712 345 678", "+254 812 345 678"),
    "phone_ng": ("0803 123 4567", "+234 603 123 4567"),
    "phone_gh": ("024 123 4567", "+233 14 123 4567"),
    "phone_pl": ("+48 512 345 678", "+48 312 345 67"),
    "phone_es": ("+34 612 345 678", "+34 912 345 678"),
    "phone_pt": ("+351 912 345 678", "+351 212 345 678"),
    "phone_se": ("070 123 45 67", "+46 8 123 456 78"),
    "phone_no": ("+47 412 34 567", "+47 212 34 567"),
    "phone_dk": ("+45 20 12 34 56", "+45 2012 345"),
    "phone_fi": ("040 123 4567", "+358 9 123 4567"),
    "phone_dk_fi": ("+358 40 123 4567", "+46 70 123 45 67"),
    "phone_ch": ("078 123 45 67", "+41 44 123 45 67"),
    "phone_it": ("+39 312 345 6789", "+39 06 1234 5678"),
    "phone_fr": ("06 12 34 56 78", "+33 1 23 45 67 89"),
    "phone_sg": ("+65 8123 4567", "+65 6123 4567"),
    "phone_my": ("012 345 6789", "+60 3 1234 5678"),
    "phone_th": ("081 234 5678", "+66 2 123 4567"),
    "phone_ph": ("0917 123 4567", "+63 2 123 4567"),
    "phone_co": ("+57 300 123 4567", "+57 1 234 5678"),
    "phone_pe": ("+51 912 345 678", "+51 112 345 678"),
    "phone_kz": ("+7 701 234 5678", "+7 912 345 67 89"),
    "phone_ru": ("+7 912 345 67 89", "+7 701 234 5678"),
    "phone_pk": ("0300 1234567", "+92 21 1234567"),
    "phone_bd": ("01712 345678", "+880 1212 345678"),
    "phone_cn": ("+86 138 0013 8000", "+86 10 1234 5678"),
    "phone_ca": ("+1 416 555 0123", "+1 016 555 0123"),
    "phone_au": ("0412 345 678", "+61 2 1234 5678"),
    "phone_eg": ("010 0123 4567", "+20 2 1234 5678"),
    "phone_sa": ("050 123 4567", "+966 11 123 4567"),
    "phone_zw": ("077 123 4567", "+263 4 123 456"),
    "phone_hk": ("+852 5123 4567", "+852 2123 4567"),
    "phone_ua": ("067 123 4567", "+380 12 345 6789"),
    "email_or_phone_us": ("+1 212 555 0123", "212"),
    "email_or_phone_ca": ("ada@example.ca", "416"),
    "email_or_phone_cn": ("+86 138 0013 8000", "138"),
    "payid": ("51 824 753 556", "51 824 753 557"),
}


class TestFieldKinds:
    def test_every_kind_has_a_good_and_a_bad_example(self):
        assert set(EXAMPLES) == set(KINDS)

    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_good_passes_and_bad_is_refused_with_a_reason(self, kind):
        good, bad = EXAMPLES[kind]
        assert KINDS[kind](good)
        with pytest.raises(ValueError, match=r"\w") as exc:
            KINDS[kind](bad)
        assert str(exc.value).endswith(".")

    @pytest.mark.parametrize(
        ("typed", "stored"),
        [
            ("de89 3704 0044 0532 0130 00", "DE89370400440532013000"),
            ("GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432"),
        ],
    )
    def test_a_good_iban(self, typed, stored):
        assert KINDS["iban"](typed) == stored

    def test_names_keep_their_spaces_and_ids_refuse_them(self):
        assert KINDS["city"]("  São   Paulo ") == "São Paulo"
        assert KINDS["cbu"]("2850 5909 4009 0418 1352 01") == "2850590940090418135201"

    def test_a_bad_iban_names_the_checksum(self):
        with pytest.raises(ValueError, match="check digits don't match"):
            KINDS["iban"]("GB82 WEST 1234 5698 7654 33")

    @pytest.mark.parametrize(
        ("key", "stored"),
        [
            ("390.533.447-05", "39053344705"),  # CPF
            ("11.222.333/0001-81", "11222333000181"),  # CNPJ
            ("Ada@Example.COM", "Ada@example.com"),
            ("+55 (11) 91234-5678", "+5511912345678"),
            ("123E4567-E89B-42D3-A456-426614174000", "123e4567-e89b-42d3-a456-426614174000"),
        ],
    )
    def test_pix_keys_of_every_type(self, key, stored):
        assert KINDS["pix_key"](key) == stored

    @pytest.mark.parametrize(
        "key",
        [
            "390.533.447-06",  # a CPF whose check digits are wrong
            "11.222.333/0001-82",  # a CNPJ whose check digits are wrong
            "+55 11 1234 5678",  # a landline: Pix phone keys are mobiles
            "+44 7700 900123",  # not Brazilian
            "123e4567-e89b-42d3-a456-42661417400",  # a random key one digit short
            "12345",
        ],
    )
    def test_bad_pix_keys(self, key):
        with pytest.raises(ValueError, match=r"Pix key|check digit|mobile number"):
            KINDS["pix_key"](key)

    @pytest.mark.parametrize(
        ("vpa", "ok"),
        [
            ("ada.obi@okaxis", True),
            ("9876543210@ybl", True),
            ("ADA-OBI_1@PaytM", True),
            ("ada obi@okaxis", False),
            ("ada@", False),
            ("@okaxis", False),
            ("ada@ok.axis", False),
            ("ada@@okaxis", False),
        ],
    )
    def test_upi_ids(self, vpa, ok):
        if ok:
            assert KINDS["upi_vpa"](vpa) == vpa.lower()
        else:
            with pytest.raises(ValueError, match="UPI ID"):
                KINDS["upi_vpa"](vpa)

    def test_nuban_check_digit_as_the_cbn_publishes_it(self):
        # CBN's worked examples: First Bank (011), serials 000001457 and 000000022.
        assert nuban_check_digit("011", "000001457") == 9
        assert nuban_check_digit("011", "000000022") == 0

    def test_a_nuban_of_another_bank_is_refused(self):
        details = {"holder_name": "Ada Obi", "bank_name": "First Bank", "bank_code": "011"}
        values, errors = clean_details(
            "bank-transfer-ngn", {**details, "account_number": "0000014579"}
        )
        assert not errors
        assert values["account_number"] == "0000014579"
        _, errors = clean_details(
            "bank-transfer-ngn", {**details, "bank_code": "058", "account_number": "0000014579"}
        )
        assert list(errors) == ["account_number"]
        assert "check digit" in errors["account_number"]


def _good_details(code: str) -> dict[str, str]:
    """A valid account for a method, from each field's good example (and the NUBAN's bank)."""
    return {f.key: EXAMPLES[f.kind][0] for f in fields_for(code).fields}


class TestCatalogue:
    def test_sixty_real_methods_at_least(self):
        assert len(CATALOG) >= 60
        assert len({m.code for m in CATALOG}) == len(CATALOG)
        assert len({m.name for m in CATALOG}) == len(CATALOG)

    def test_the_migration_made_a_row_for_each(self, refdata):
        rows = {m.code: m for m in PaymentMethod.objects.all()}
        for method in CATALOG:
            row = rows[method.code]
            assert (row.name, row.countries, row.currencies) == (
                method.name,
                list(method.countries),
                list(method.currencies),
            )
        assert rows["pix"].countries == ["BR"]
        assert rows["pix"].currencies == ["BRL"]

    @pytest.mark.parametrize("method", CATALOG, ids=lambda m: m.code)
    def test_method_has_regions_fields_and_validators(self, method):
        # regions: real countries and currencies, or explicitly anywhere
        assert method.worldwide != bool(method.countries)
        assert set(method.countries) <= set(COUNTRY_NAMES)
        assert set(method.currencies) <= set(list_currencies())
        if not method.worldwide:
            assert method.currencies
        # fields: at least one, each of a kind with a validator
        spec = fields_for(method.code)
        assert spec.fields
        assert all(f.kind in KINDS for f in spec.fields)
        # a good account passes
        values, errors = clean_details(method.code, _good_details(method.code))
        assert errors == {}
        assert set(values) == {f.key for f in spec.fields}
        # and a bad value in any field is refused by that field's name
        for field in spec.fields:
            bad = {**_good_details(method.code), field.key: EXAMPLES[field.kind][1]}
            _, errors = clean_details(method.code, bad)
            assert field.key in errors, (method.code, field.key)

    def test_a_brazilian_saves_a_pix_account(self, alice):
        account = pay.payment_account_create(
            user=alice,
            method="pix",
            details={"holder_name": "Alice", "pix_key": "+55 11 91234-5678"},
        )
        assert account.details == {"holder_name": "Alice", "pix_key": "+5511912345678"}


class TestBookMethodFilter:
    def test_the_brl_book_lists_brazils_methods_first(self, client, refdata):
        # given BRL's book
        html = client.get(reverse("home"), {"fiat": "BRL"}).content.decode()
        # then its method filter starts with Pix, then the worldwide methods, then the rest
        used_in, anywhere, others = (
            html.index('<optgroup label="Used in BRL">'),
            html.index('<optgroup label="Used anywhere">'),
            html.index('<optgroup label="Other methods">'),
        )
        assert used_in < html.index('value="pix"') < anywhere
        assert anywhere < html.index('value="paypal"') < others < html.index('value="sepa"')

    def test_a_pix_offer_is_found_by_its_method_in_the_brl_book(self, client, alice):
        # given a Brazilian seller's Pix offer
        fund(alice)
        make_offer(alice, fiat="BRL", price="500000", min_fiat="50", max_fiat="5000",
                   payment_methods=["pix"])  # fmt: skip
        # when a buyer filters the BRL book by Pix
        page = client.get(reverse("home"), {"fiat": "BRL", "payment_method": "pix"})
        # then it is there
        assert page.context["page"].object_list[0].maker == alice

    def test_a_profile_country_comes_before_the_fiat(self, alice):
        profile = profile_for(alice)
        profile.country = "KE"  # once profiles carry a country (issue 20's settings)
        alice.profile = profile
        groups = payment_methods_for_viewer(user=alice, fiat_code="EUR")
        assert groups.where == "Kenya"
        assert {"mpesa", "bank-transfer-kes", "airtel-money"} <= {m.code for m in groups.local}
        assert "sepa" in {m.code for m in groups.others}

    def test_all_currencies_lists_every_method_ungrouped(self, refdata):
        groups = payment_methods_for_viewer(user=None, fiat_code="")
        assert len(groups.others) == PaymentMethod.objects.filter(is_active=True).count()
