from django.urls import path

from lending import views

app_name = "lending"

urlpatterns = [
    path("", views.lend, name="lend"),
    path("borrow/", views.borrow, name="borrow"),
    path("borrow/preview/", views.borrow_preview, name="borrow_preview"),
    path("offers/<int:offer_id>/take/", views.offer_take, name="offer_take"),
    path("mine/", views.my_loans, name="my_loans"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/fund/", views.request_fund, name="request_fund"),
    path("requests/<int:pk>/cancel/", views.request_cancel, name="request_cancel"),
    path("loans/<int:pk>/", views.loan_detail, name="loan_detail"),
    path("loans/<int:pk>/collateral/", views.loan_add_collateral, name="loan_add_collateral"),
    path("loans/<int:pk>/repay/", views.loan_repay, name="loan_repay"),
    path("loans/<int:pk>/disputes/", views.loan_dispute_open, name="loan_dispute_open"),
    path(
        "loans/<int:pk>/disputes/<int:dispute_id>/statements/",
        views.loan_dispute_statement,
        name="loan_dispute_statement",
    ),
]
