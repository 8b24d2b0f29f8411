from django.contrib import admin

from marketplace import services
from marketplace.models import FiatCurrency, Offer, PaymentMethod, PriceIndex


@admin.register(FiatCurrency)
class FiatCurrencyAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "precision", "is_active")

    def get_readonly_fields(self, request, obj=None):
        # As for assets: fiat amounts already stored were validated at this precision.
        return ("code", "precision") if obj else ()


@admin.register(PaymentMethod)
class PaymentMethodAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "is_active")


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
