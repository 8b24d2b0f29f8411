from django.urls import include, path

from accounts import views as account_views
from marketplace import views

urlpatterns = [
    path("", views.order_book, name="home"),
    path("match/", views.quick_trade, name="quick_trade"),
    path("offers/new/", views.offer_new, name="offer_new"),
    path("offers/mine/", views.my_offers, name="my_offers"),
    path("offers/<int:offer_id>/", views.offer_detail, name="offer_detail"),
    path("offers/<int:offer_id>/edit/", views.offer_edit, name="offer_edit"),
    path("offers/<int:offer_id>/pause/", views.offer_pause, name="offer_pause"),
    path("offers/<int:offer_id>/resume/", views.offer_resume, name="offer_resume"),
    path("offers/<int:offer_id>/delete/", views.offer_delete, name="offer_delete"),
    path("trades/", views.my_trades, name="my_trades"),
    path("trades/<int:trade_id>/", views.trade_detail, name="trade_detail"),
    path("trades/<int:trade_id>/status/", views.trade_status, name="trade_status"),
    path("trades/<int:trade_id>/chat/", views.trade_chat, name="trade_chat"),
    path("trades/<int:trade_id>/chat/send/", views.trade_chat_send, name="trade_chat_send"),
    path(
        "trades/<int:trade_id>/chat/<int:message_id>/attachment/",
        views.trade_chat_attachment,
        name="trade_chat_attachment",
    ),
    path("trades/<int:trade_id>/<slug:action>/", views.trade_action, name="trade_action"),
    path("wallet/", views.wallet, name="wallet"),
    path("wallet/proof/<int:seq>/", views.transfer_proof, name="transfer_proof"),
    path(
        "wallet/transfers/<int:transfer_id>/proof/",
        views.transfer_proof_by_id,
        name="transfer_proof_by_id",
    ),
    path("u/<str:username>/", account_views.profile, name="profile"),
    path("settings/", include("accounts.settings_urls")),
]
