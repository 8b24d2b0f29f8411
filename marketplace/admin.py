from django.contrib import admin

from marketplace import services
from marketplace.models import FiatCurrency, Offer, PaymentMethod, PriceIndex
from marketplace.services import reference


@admin.register(FiatCurrency)
class FiatCurrencyAdmin(admin.ModelAdmin):
    """Every ISO 4217 currency is here (loaded from CLDR); moderators pick the ones traded."""

    list_display = ("code", "name", "precision", "is_active")
    list_filter = ("is_active", "precision")
    search_fields = ("code", "name")
    actions = ("enable_currencies", "disable_currencies")

    def get_readonly_fields(self, request, obj=None):
        # As for assets: fiat amounts already stored were validated at this precision.
        return ("code", "precision") if obj else ()

    @admin.action(description="Enable the selected currencies for trading")
    def enable_currencies(self, request, queryset):
        codes = list(queryset.values_list("code", flat=True))
        changed = reference.fiat_currencies_set_active(codes=codes, active=True)
        self.message_user(request, f"{changed} currenc{'y' if changed == 1 else 'ies'} enabled.")

    @admin.action(description="Disable the selected currencies (open offers and trades go on)")
    def disable_currencies(self, request, queryset):
        codes = list(queryset.values_list("code", flat=True))
        changed = reference.fiat_currencies_set_active(codes=codes, active=False)
        self.message_user(request, f"{changed} currenc{'y' if changed == 1 else 'ies'} disabled.")


@admin.register(PaymentMethod)
class PaymentMethodAdmin(admin.ModelAdmin):
    """The catalogue's methods (marketplace.payment_catalog) and any a moderator added; a data
    migration keeps the catalogue's names and regions, so edit those in the catalogue."""

    list_display = ("code", "name", "regions", "currency_list", "is_active")
    list_filter = ("is_active",)
    search_fields = ("code", "name", "countries", "currencies")

    @admin.display(description="Countries")
    def regions(self, obj):
        return ", ".join(obj.countries) or "anywhere"

    @admin.display(description="Currencies")
    def currency_list(self, obj):
        return ", ".join(obj.currencies) or "any"


@admin.register(PriceIndex)
class PriceIndexAdmin(admin.ModelAdmin):
    list_display = ("asset", "fiat", "price", "source", "updated_at")
    list_editable = ("price",)
    list_filter = ("asset", "fiat")
    actions = ("confirm_prices",)

    @admin.action(description="Confirm the selected prices as current (same price, fresh time)")
    def confirm_prices(self, request, queryset):
        # A price the feed did not move is still right: confirming it keeps what reads the index
        # (liquidations refuse a price older than PRICE_MAX_AGE) working. Through the service.
        for row in queryset.select_related("asset", "fiat"):
            services.price_index_set(
                asset_code=row.asset.code, fiat_code=row.fiat.code, price=row.price,
                source="admin",
            )  # fmt: skip
        self.message_user(request, f"{queryset.count()} price(s) confirmed as current.")

    def save_model(self, request, obj, form, change):
        # Through the service: the pair's floating offers follow the new price.
        saved = services.price_index_set(
            asset_code=obj.asset.code, fiat_code=obj.fiat.code, price=obj.price, source="admin"
        )
        obj.pk = saved.pk


@admin.register(Offer)
class OfferAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "maker",
        "side",
        "asset",
        "fiat",
        "price_type",
        "available",
        "is_active",
        "is_deleted",
    )
    list_filter = ("side", "asset", "fiat", "is_active")
    search_fields = ("maker__username",)
    # Offers change through the makers' services; moderators read them here.
    readonly_fields = [f.name for f in Offer._meta.fields] + ["payment_methods"]

    def has_add_permission(self, request):
        return False
