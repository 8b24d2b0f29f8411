from django.contrib import admin

from accounts.models import Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "kyc_tier", "last_seen", "created_at")
    search_fields = ("user__username",)
