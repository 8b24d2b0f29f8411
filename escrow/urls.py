from django.urls import path

from escrow import views

urlpatterns = [
    path("match/", views.quick_trade, name="quick_trade"),
    path("match/quote/", views.quick_quote, name="quick_quote"),
    path("offers/mine/", views.my_offers, name="my_offers"),
    path("offers/<int:offer_id>/", views.offer_detail, name="offer_detail"),
    path("offers/<int:offer_id>/quote/", views.offer_quote, name="offer_quote"),
    path("trades/", views.my_trades, name="my_trades"),
    path("trades/<int:trade_id>/", views.trade_detail, name="trade_detail"),
    path("trades/<int:trade_id>/status/", views.trade_status, name="trade_status"),
    path("trades/<int:trade_id>/feedback/", views.trade_feedback, name="trade_feedback"),
    path("trades/<int:trade_id>/chat/", views.trade_chat, name="trade_chat"),
    path("trades/<int:trade_id>/chat/send/", views.trade_chat_send, name="trade_chat_send"),
    path(
        "trades/<int:trade_id>/chat/<int:message_id>/attachment/",
        views.trade_chat_attachment,
        name="trade_chat_attachment",
    ),
    path("trades/<int:trade_id>/<slug:action>/", views.trade_action, name="trade_action"),
]
