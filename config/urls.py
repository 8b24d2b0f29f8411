from csp.decorators import csp_exempt
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import views as accounts_views
from common import views as common_views
from escrow import views as escrow_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("config.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI boots with an inline script: the one page outside the Content-Security-Policy.
    path(
        "api/docs/",
        csp_exempt()(SpectacularSwaggerView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    re_path(r"^api/", common_views.api_not_found),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/feedback/<int:feedback_id>/reply/",
        escrow_views.feedback_reply,
        name="feedback_reply",
    ),
    path("accounts/", include("accounts.urls")),
    path("i18n/setlang/", accounts_views.language_set, name="set_language"),
    path("disputes/", include("disputes.urls")),
    path("notifications/", include("notifications.urls")),
    path("lending/", include("lending.urls")),
    path("u/<str:username>/", escrow_views.trader_profile, name="profile"),
    path("settings/", include("accounts.settings_urls")),
    path("", include("marketplace.urls")),
    path("", include("escrow.urls")),
    path("", include("ledger.urls")),
]

handler404 = "common.views.not_found"
handler500 = "common.views.server_error"
