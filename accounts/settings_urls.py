"""/settings/: the user's own verification, API keys, sessions and trusted/blocked lists."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.settings_page, name="settings"),
    path("kyc/", views.kyc_upload, name="kyc_upload"),
    path("kyc/<int:document_id>/delete/", views.kyc_delete, name="kyc_delete"),
    path("kyc/<int:document_id>/file/", views.kyc_file, name="kyc_file"),
    path("keys/", views.api_key_create, name="settings_key_create"),
    path("keys/<int:key_id>/revoke/", views.api_key_revoke, name="settings_key_revoke"),
    path("token/", views.token_rotate, name="settings_token_rotate"),
    path("sessions/end-others/", views.sessions_end_others, name="settings_sessions_end_others"),
    path("sessions/<int:session_id>/revoke/", views.session_revoke, name="settings_session_revoke"),
    path("time-zone/", views.time_zone_set, name="settings_time_zone"),
    path("country/", views.country_set, name="settings_country"),  # issue 20
    path("2fa/start/", views.totp_start, name="totp_start"),
    path("2fa/confirm/", views.totp_confirm, name="totp_confirm"),
    path("2fa/disable/", views.totp_disable, name="totp_disable"),
    path("relations/", views.relation_add, name="relation_add"),
    path("relations/<int:relation_id>/remove/", views.relation_remove, name="relation_remove"),
]
