from django.urls import path

from notifications import settings_views, views

urlpatterns = [
    path("", views.notification_list, name="notifications"),
    path("<int:notification_id>/read/", views.notification_read, name="notification_read"),
    # the settings page's Notifications section
    path("preferences/", settings_views.preferences_save, name="notification_preferences"),
    path("telegram/link/", settings_views.telegram_link, name="telegram_link"),
    path("telegram/unlink/", settings_views.telegram_unlink, name="telegram_unlink"),
]
