"""Included at /api/v1/ by config/api_urls.py."""

from django.urls import path

from notifications.api import preferences, views

urlpatterns = [
    path("webhooks/", views.WebhookListApi.as_view(), name="api-webhooks"),
    path("webhooks/<int:endpoint_id>/", views.WebhookDetailApi.as_view(), name="api-webhook"),
    path(
        "webhooks/<int:endpoint_id>/deliveries/",
        views.WebhookDeliveryListApi.as_view(),
        name="api-webhook-deliveries",
    ),
    path("notifications/", views.NotificationListApi.as_view(), name="api-notifications"),
    path(
        "notifications/preferences/",
        preferences.NotificationPreferencesApi.as_view(),
        name="api-notification-preferences",
    ),
    path(
        "notifications/<int:notification_id>/read/",
        views.NotificationReadApi.as_view(),
        name="api-notification-read",
    ),
]
