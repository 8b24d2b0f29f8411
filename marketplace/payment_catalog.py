"""The payment methods the platform knows: each with where it is used (countries, currencies)
and what a saved account of it holds (its fields, of the kinds marketplace.payment_fields
checks). Data only; marketplace.services.reference writes it into PaymentMethod rows (a data
migration, and reference_data in the tests), so adding a method here and a migration that
calls the sync is all it takes. Countries are ISO 3166 alpha-2, currencies ISO 4217; a method
with no countries is used anywhere (`worldwide`)."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy

from marketplace.payment_fields import (
    BIC,
    EMAIL,
    HOLDER,
    IBAN,
    PHONE,
    AccountField,
    MethodFields,
    Text,
    nuban_matches_bank,
)


@dataclass(frozen=True)
class CatalogMethod:
    code: str
    name: str
    fields: MethodFields
    countries: tuple[str, ...] = ()
    currencies: tuple[str, ...] = ()
    worldwide: bool = False


def _one(key: str, label: Text, kind: str, help: Text = "") -> MethodFields:
    """The holder's name and one identifier (a phone, a tag...)."""
    return MethodFields((HOLDER, AccountField(key, label, kind, help=help)))


def _mobile(kind: str, example: str) -> MethodFields:
    return _one(
        "phone",
        gettext_lazy("Mobile number"),
        kind,
        help=format_lazy(gettext_lazy("The number the app is on, e.g. {example}"), example=example),
    )


def _card() -> MethodFields:
    return _one(
        "card_number",
        gettext_lazy("Card number"),
        "card",
        help=gettext_lazy("16-19 digits, e.g. 2200 7001 2345 6789"),
    )


EEA = (
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE",
    "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "IS", "LI", "NO",
)  # fmt: skip
SEPA = (*EEA, "CH", "GB", "MC", "SM", "AD", "VA")
SEPA_FIELDS = MethodFields((HOLDER, IBAN, BIC))
EMAIL_ONLY = MethodFields((HOLDER, EMAIL))
BANK_GENERIC = MethodFields(
    (
        HOLDER,
        AccountField("bank_name", gettext_lazy("Bank"), "text"),
        AccountField("account_number", gettext_lazy("Account number or IBAN"), "text"),
        AccountField("bic", gettext_lazy("BIC / SWIFT / routing code"), "text", required=False),
    )
)
CASH_PICKUP = MethodFields(
    (
        AccountField(
            "holder_name",
            gettext_lazy("Receiver's full name"),
            "name",
            help=gettext_lazy("As on their ID."),
        ),
        AccountField("city", gettext_lazy("City"), "city"),
        AccountField(
            "country", gettext_lazy("Country"), "country", help=gettext_lazy("Two letters, e.g. NG")
        ),
    )
)
PHONE_ANY = AccountField(
    "phone",
    gettext_lazy("Mobile number"),
    "phone",
    help=gettext_lazy("With the country code, e.g. +256 712 345 678"),
)

CATALOG: tuple[CatalogMethod, ...] = (
    # --- Europe -------------------------------------------------------------------------------
    CatalogMethod("sepa", "SEPA transfer", SEPA_FIELDS, SEPA, ("EUR",)),
    CatalogMethod("sepa-instant", "SEPA Instant", SEPA_FIELDS, SEPA, ("EUR",)),
    CatalogMethod(
        "faster-payments",
        "Faster Payments",
        MethodFields(
            (
                HOLDER,
                AccountField(
                    "sort_code",
                    gettext_lazy("Sort code"),
                    "sort_code",
                    help=gettext_lazy("6 digits, e.g. 12-34-56"),
                ),
                AccountField(
                    "account_number",
                    gettext_lazy("Account number"),
                    "uk_account",
                    help=gettext_lazy("8 digits"),
                ),
            )
        ),
        ("GB",),
        ("GBP",),
    ),
    CatalogMethod(
        "revolut",
        "Revolut",
        MethodFields(
            (
                HOLDER,
                AccountField(
                    "revtag",
                    gettext_lazy("Revtag"),
                    "tag",
                    required=False,
                    help=gettext_lazy("E.g. @alice"),
                ),
                PHONE,
            ),
            one_of=("revtag", "phone"),
        ),
        (*EEA, "GB", "CH", "US", "AU", "NZ", "SG", "JP", "BR"),
        (
            "EUR",
            "GBP",
            "USD",
            "CHF",
            "PLN",
            "SEK",
            "NOK",
            "DKK",
            "CZK",
            "HUF",
            "RON",
            "AUD",
            "NZD",
            "SGD",
            "JPY",
            "BRL",
        ),
    ),
    CatalogMethod("blik", "BLIK", _mobile("phone_pl", "+48 512 345 678"), ("PL",), ("PLN",)),
    CatalogMethod(
        "ideal",
        "iDEAL",
        MethodFields(
            (
                HOLDER,
                AccountField(
                    "iban", gettext_lazy("IBAN (Dutch)"), "iban_nl", help=gettext_lazy("NL...")
                ),
            )
        ),
        ("NL",),
        ("EUR",),
    ),
    CatalogMethod("bizum", "Bizum", _mobile("phone_es", "+34 612 345 678"), ("ES",), ("EUR",)),
    CatalogMethod("mb-way", "MB WAY", _mobile("phone_pt", "+351 912 345 678"), ("PT",), ("EUR",)),
    CatalogMethod("swish", "Swish", _mobile("phone_se", "+46 70 123 45 67"), ("SE",), ("SEK",)),
    CatalogMethod("vipps", "Vipps", _mobile("phone_no", "+47 412 34 567"), ("NO",), ("NOK",)),
    CatalogMethod(
        "mobilepay",
        "MobilePay",
        _mobile("phone_dk_fi", "+45 20 12 34 56"),
        ("DK", "FI"),
        ("DKK", "EUR"),
    ),
    CatalogMethod("twint", "TWINT", _mobile("phone_ch", "+41 78 123 45 67"), ("CH",), ("CHF",)),
    CatalogMethod(
        "satispay", "Satispay", _mobile("phone_it", "+39 312 345 6789"), ("IT",), ("EUR",)
    ),
    CatalogMethod("lydia", "Lydia", _mobile("phone_fr", "+33 6 12 34 56 78"), ("FR",), ("EUR",)),
    CatalogMethod("monobank", "Monobank", _card(), ("UA",), ("UAH",)),
    CatalogMethod("privatbank", "PrivatBank", _card(), ("UA",), ("UAH",)),
    # --- Russia, Central Asia -------------------------------------------------------------------
    CatalogMethod(
        "sbp",
        "SBP (Faster Payments System, Russia)",
        MethodFields(
            (
                HOLDER,
                AccountField(
                    "phone",
                    gettext_lazy("Mobile number"),
                    "phone_ru",
                    help=gettext_lazy("E.g. +7 912 345 67 89"),
                ),
                AccountField(
                    "bank_name",
                    gettext_lazy("Bank"),
                    "text",
                    help=gettext_lazy("The bank SBP should pay into."),
                ),
            )
        ),
        ("RU",),
        ("RUB",),
    ),
    CatalogMethod("tbank", "T-Bank (Tinkoff)", _card(), ("RU",), ("RUB",)),
    CatalogMethod("sberbank", "Sberbank", _card(), ("RU",), ("RUB",)),
    CatalogMethod(
        "yoomoney",
        "YooMoney",
        _one(
            "wallet",
            gettext_lazy("Wallet number"),
            "yoomoney",
            help=gettext_lazy("E.g. 410011234567890"),
        ),
        ("RU",),
        ("RUB",),
    ),
    CatalogMethod("kaspi", "Kaspi", _mobile("phone_kz", "+7 701 234 5678"), ("KZ",), ("KZT",)),
    # --- North America ---------------------------------------------------------------------------
    CatalogMethod(
        "ach",
        "ACH bank transfer",
        MethodFields(
            (
                HOLDER,
                AccountField(
                    "routing_number",
                    gettext_lazy("Routing number (ABA)"),
                    "aba_routing",
                    help=gettext_lazy("9 digits"),
                ),
                AccountField(
                    "account_number",
                    gettext_lazy("Account number"),
                    "us_account",
                    help=gettext_lazy("4-17 digits"),
                ),
            )
        ),
        ("US",),
        ("USD",),
    ),
    CatalogMethod(
        "zelle",
        "Zelle",
        MethodFields(
            (
                HOLDER,
                AccountField("email", gettext_lazy("Email"), "email", required=False),
                AccountField("phone", gettext_lazy("US mobile number"), "phone_us", required=False),
            ),
            one_of=("email", "phone"),
        ),
        ("US",),
        ("USD",),
    ),
    CatalogMethod(
        "venmo",
        "Venmo",
        _one("username", gettext_lazy("Venmo username"), "handle", "E.g. @Alice-Martin"),
        ("US",),
        ("USD",),
    ),
    CatalogMethod(
        "cash-app",
        "Cash App",
        _one("cashtag", gettext_lazy("$Cashtag"), "cashtag", "E.g. $alice"),
        ("US", "GB"),
        ("USD", "GBP"),
    ),
    CatalogMethod(
        "apple-cash",
        "Apple Cash",
        _one("contact", gettext_lazy("Email or mobile number"), "email_or_phone_us"),
        ("US",),
        ("USD",),
    ),
    CatalogMethod(
        "interac",
        "Interac e-Transfer",
        _one("contact", gettext_lazy("Email or mobile number"), "email_or_phone_ca"),
        ("CA",),
        ("CAD",),
    ),
    CatalogMethod(
        "spei",
        "SPEI",
        _one("clabe", gettext_lazy("CLABE"), "clabe", "18 digits, e.g. 002010077777777771"),
        ("MX",),
        ("MXN",),
    ),
    # --- Latin America ---------------------------------------------------------------------------
    CatalogMethod(
        "pix",
        "Pix",
        _one(
            "pix_key",
            gettext_lazy("Pix key"),
            "pix_key",
            "Your CPF or CNPJ, email, phone (+55 11 91234 5678) or random key.",
        ),
        ("BR",),
        ("BRL",),
    ),
    CatalogMethod(
        "mercado-pago",
        "Mercado Pago",
        MethodFields(
            (
                HOLDER,
                AccountField(
                    "cvu",
                    gettext_lazy("CVU"),
                    "cbu",
                    required=False,
                    help=gettext_lazy("22 digits"),
                ),
                AccountField(
                    "alias",
                    gettext_lazy("Alias"),
                    "alias_ar",
                    required=False,
                    help=gettext_lazy("E.g. alice.mp"),
                ),
            ),
            one_of=("cvu", "alias"),
        ),
        ("AR",),
        ("ARS",),
    ),
    CatalogMethod(
        "bank-transfer-ars",
        "Bank transfer (CBU, Argentina)",
        _one("cbu", gettext_lazy("CBU"), "cbu", "22 digits"),
        ("AR",),
        ("ARS",),
    ),
    CatalogMethod("nequi", "Nequi", _mobile("phone_co", "+57 300 123 4567"), ("CO",), ("COP",)),
    CatalogMethod("yape", "Yape", _mobile("phone_pe", "+51 912 345 678"), ("PE",), ("PEN",)),
    CatalogMethod("plin", "Plin", _mobile("phone_pe", "+51 912 345 678"), ("PE",), ("PEN",)),
    # --- Asia and the Pacific ----------------------------------------------------------------------
    CatalogMethod(
        "upi",
        "UPI",
        _one("vpa", gettext_lazy("UPI ID (VPA)"), "upi_vpa", "E.g. alice@okaxis"),
        ("IN",),
        ("INR",),
    ),
    CatalogMethod(
        "imps",
        "IMPS / NEFT bank transfer",
        MethodFields(
            (
                HOLDER,
                AccountField(
                    "ifsc",
                    gettext_lazy("IFSC"),
                    "ifsc",
                    help=gettext_lazy("11 characters, e.g. SBIN0001234"),
                ),
                AccountField("account_number", gettext_lazy("Account number"), "in_account"),
            )
        ),
        ("IN",),
        ("INR",),
    ),
    CatalogMethod(
        "payid",
        "PayID (Osko)",
        _one("payid", gettext_lazy("PayID"), "payid", "Your email, mobile or ABN"),
        ("AU",),
        ("AUD",),
    ),
    CatalogMethod(
        "au-bank-transfer",
        "Bank transfer (BSB, Australia)",
        MethodFields(
            (
                HOLDER,
                AccountField(
                    "bsb", gettext_lazy("BSB"), "bsb", help=gettext_lazy("6 digits, e.g. 062-000")
                ),
                AccountField("account_number", gettext_lazy("Account number"), "au_account"),
            )
        ),
        ("AU",),
        ("AUD",),
    ),
    CatalogMethod(
        "paynow",
        "PayNow",
        MethodFields(
            (
                HOLDER,
                AccountField("phone", gettext_lazy("Mobile number"), "phone_sg", required=False),
                AccountField("uen", gettext_lazy("UEN (businesses)"), "uen", required=False),
            ),
            one_of=("phone", "uen"),
        ),
        ("SG",),
        ("SGD",),
    ),
    CatalogMethod("duitnow", "DuitNow", _mobile("phone_my", "+60 12 345 6789"), ("MY",), ("MYR",)),
    CatalogMethod(
        "promptpay", "PromptPay", _mobile("phone_th", "+66 81 234 5678"), ("TH",), ("THB",)
    ),
    CatalogMethod("gcash", "GCash", _mobile("phone_ph", "+63 917 123 4567"), ("PH",), ("PHP",)),
    CatalogMethod("maya", "Maya", _mobile("phone_ph", "+63 917 123 4567"), ("PH",), ("PHP",)),
    CatalogMethod(
        "fps-hk",
        "FPS (Hong Kong)",
        MethodFields(
            (
                HOLDER,
                AccountField("phone", gettext_lazy("Mobile number"), "phone_hk", required=False),
                AccountField("fps_id", gettext_lazy("FPS ID"), "fps_id", required=False),
            ),
            one_of=("phone", "fps_id"),
        ),
        ("HK",),
        ("HKD",),
    ),
    CatalogMethod(
        "alipay",
        "Alipay",
        _one("account", gettext_lazy("Alipay account (email or mobile)"), "email_or_phone_cn"),
        ("CN",),
        ("CNY",),
    ),
    CatalogMethod(
        "wechat-pay",
        "WeChat Pay",
        _one("wechat_id", gettext_lazy("WeChat ID"), "wechat_id"),
        ("CN",),
        ("CNY",),
    ),
    CatalogMethod(
        "easypaisa", "Easypaisa", _mobile("phone_pk", "+92 300 1234567"), ("PK",), ("PKR",)
    ),
    CatalogMethod(
        "jazzcash", "JazzCash", _mobile("phone_pk", "+92 300 1234567"), ("PK",), ("PKR",)
    ),
    CatalogMethod("bkash", "bKash", _mobile("phone_bd", "+880 1712 345678"), ("BD",), ("BDT",)),
    CatalogMethod("nagad", "Nagad", _mobile("phone_bd", "+880 1712 345678"), ("BD",), ("BDT",)),
    # --- Middle East -----------------------------------------------------------------------------
    CatalogMethod("stc-pay", "STC Pay", _mobile("phone_sa", "+966 50 123 4567"), ("SA",), ("SAR",)),
    CatalogMethod(
        "vodafone-cash",
        "Vodafone Cash",
        _mobile("phone_eg", "+20 100 123 4567"),
        ("EG",),
        ("EGP",),
    ),
    CatalogMethod(
        "instapay-eg",
        "InstaPay (Egypt)",
        _one("ipa", gettext_lazy("InstaPay address"), "instapay", "E.g. alice@instapay"),
        ("EG",),
        ("EGP",),
    ),
    # --- Africa -------------------------------------------------------------------------------------
    CatalogMethod(
        "bank-transfer-ngn",
        "Bank transfer (NGN)",
        MethodFields(
            (
                HOLDER,
                AccountField(
                    "bank_name", gettext_lazy("Bank"), "text", help=gettext_lazy("E.g. GTBank")
                ),
                AccountField(
                    "bank_code",
                    gettext_lazy("Bank code (CBN)"),
                    "ng_bank_code",
                    help=gettext_lazy("E.g. 058 for GTBank"),
                ),
                AccountField(
                    "account_number",
                    gettext_lazy("Account number (NUBAN)"),
                    "nuban",
                    help=gettext_lazy("10 digits"),
                ),
            ),
            check=nuban_matches_bank,
        ),
        ("NG",),
        ("NGN",),
    ),
    CatalogMethod(
        "bank-transfer-kes",
        "Bank transfer (KES)",
        MethodFields(
            (
                HOLDER,
                AccountField("bank_name", gettext_lazy("Bank"), "text"),
                AccountField("account_number", gettext_lazy("Account number"), "bank_account"),
            )
        ),
        ("KE",),
        ("KES",),
    ),
    CatalogMethod(
        "bank-transfer-ghs",
        "Bank transfer (GHS)",
        MethodFields(
            (
                HOLDER,
                AccountField("bank_name", gettext_lazy("Bank"), "text"),
                AccountField("account_number", gettext_lazy("Account number"), "bank_account"),
            )
        ),
        ("GH",),
        ("GHS",),
    ),
    CatalogMethod("mpesa", "M-Pesa", _mobile("phone_ke", "+254 712 345 678"), ("KE",), ("KES",)),
    CatalogMethod(
        "mtn-momo",
        "MTN Mobile Money",
        MethodFields((HOLDER, PHONE_ANY)),
        ("GH", "UG", "RW", "ZM", "CM", "CI", "BJ", "CG", "GN", "LR", "SZ"),
        ("GHS", "UGX", "RWF", "ZMW", "XAF", "XOF", "GNF", "LRD", "SZL"),
    ),
    CatalogMethod(
        "airtel-money",
        "Airtel Money",
        MethodFields((HOLDER, PHONE_ANY)),
        ("KE", "UG", "TZ", "RW", "ZM", "MW", "CD", "CG", "MG", "NE", "TD", "GA"),
        ("KES", "UGX", "TZS", "RWF", "ZMW", "MWK", "CDF", "XAF", "MGA", "XOF"),
    ),
    CatalogMethod(
        "orange-money",
        "Orange Money",
        MethodFields((HOLDER, PHONE_ANY)),
        ("CI", "SN", "CM", "ML", "BF", "GN", "MG", "CD"),
        ("XOF", "XAF", "GNF", "MGA", "CDF"),
    ),
    CatalogMethod(
        "wave",
        "Wave",
        MethodFields((HOLDER, PHONE_ANY)),
        ("SN", "CI", "ML", "BF", "UG", "GM"),
        ("XOF", "UGX", "GMD"),
    ),
    CatalogMethod(
        "chipper-cash",
        "Chipper Cash",
        _one("chiptag", gettext_lazy("Chiptag"), "tag", "E.g. @alice"),
        ("NG", "GH", "UG", "RW"),
        ("NGN", "GHS", "UGX", "RWF"),
    ),
    CatalogMethod("paga", "Paga", _mobile("phone_ng", "+234 803 123 4567"), ("NG",), ("NGN",)),
    CatalogMethod("opay", "OPay", _mobile("phone_ng", "+234 803 123 4567"), ("NG",), ("NGN",)),
    CatalogMethod(
        "palmpay", "PalmPay", _mobile("phone_ng", "+234 803 123 4567"), ("NG",), ("NGN",)
    ),
    CatalogMethod("ecocash", "EcoCash", _mobile("phone_zw", "+263 77 123 4567"), ("ZW",), ("USD",)),
    # --- Anywhere --------------------------------------------------------------------------------
    CatalogMethod("wise", "Wise", EMAIL_ONLY, worldwide=True),
    CatalogMethod("paypal", "PayPal", EMAIL_ONLY, worldwide=True),
    CatalogMethod("skrill", "Skrill", EMAIL_ONLY, worldwide=True),
    CatalogMethod("neteller", "NETELLER", EMAIL_ONLY, worldwide=True),
    CatalogMethod("payoneer", "Payoneer", EMAIL_ONLY, worldwide=True),
    CatalogMethod("advcash", "AdvCash", EMAIL_ONLY, worldwide=True),
    CatalogMethod(
        "perfect-money",
        "Perfect Money",
        _one("account", gettext_lazy("Account"), "perfect_money", "E.g. U1234567 (U: USD, E: EUR)"),
        currencies=("USD", "EUR"),
        worldwide=True,
    ),
    CatalogMethod(
        "payeer",
        "Payeer",
        _one("account", gettext_lazy("Account"), "payeer", "E.g. P1234567"),
        worldwide=True,
    ),
    CatalogMethod(
        "swift",
        "International wire (SWIFT)",
        MethodFields(
            (
                HOLDER,
                AccountField("bank_name", gettext_lazy("Bank"), "text"),
                AccountField("account_number", gettext_lazy("IBAN or account number"), "text"),
                AccountField(
                    "bic", gettext_lazy("BIC / SWIFT"), "bic", help=gettext_lazy("E.g. COBADEFFXXX")
                ),
            )
        ),
        worldwide=True,
    ),
    CatalogMethod("bank-transfer", "Bank transfer", BANK_GENERIC, worldwide=True),
    CatalogMethod("western-union", "Western Union", CASH_PICKUP, worldwide=True),
    CatalogMethod("moneygram", "MoneyGram", CASH_PICKUP, worldwide=True),
    CatalogMethod(
        "cash-in-person",
        "Cash in person",
        MethodFields(
            (
                AccountField("city", gettext_lazy("City"), "city"),
                AccountField(
                    "country",
                    gettext_lazy("Country"),
                    "country",
                    help=gettext_lazy("Two letters, e.g. NG"),
                ),
                AccountField(
                    "meeting_place",
                    gettext_lazy("Where to meet"),
                    "text",
                    required=False,
                    help=gettext_lazy("A public place; agree on the details in the chat."),
                ),
            )
        ),
        worldwide=True,
    ),
)

BY_CODE: dict[str, CatalogMethod] = {m.code: m for m in CATALOG}
METHOD_FIELDS: dict[str, MethodFields] = {m.code: m.fields for m in CATALOG}
