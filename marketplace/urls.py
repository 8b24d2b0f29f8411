from django.urls import path

from marketplace import payment_views, views

urlpatterns = [
    path("", views.order_book, name="home"),
    path("offers/new/", views.offer_new, name="offer_new"),
    path("offers/<int:offer_id>/edit/", views.offer_edit, name="offer_edit"),
    path("offers/<int:offer_id>/pause/", views.offer_pause, name="offer_pause"),
    path("offers/<int:offer_id>/resume/", views.offer_resume, name="offer_resume"),
    path("offers/<int:offer_id>/delete/", views.offer_delete, name="offer_delete"),
    # Saved payment accounts: listed on the settings page, managed here.
    path(
        "settings/payment-accounts/new/",
        payment_views.payment_account_new,
        name="payment_account_new",
    ),
    path(
        "settings/payment-accounts/<int:account_id>/edit/",
        payment_views.payment_account_edit,
        name="payment_account_edit",
    ),
    path(
        "settings/payment-accounts/<int:account_id>/delete/",
        payment_views.payment_account_delete,
        name="payment_account_delete",
    ),
]
