from django.urls import path

from notifications import views

urlpatterns = [
    path("", views.notification_list, name="notifications"),
    path("<int:notification_id>/read/", views.notification_read, name="notification_read"),
]
