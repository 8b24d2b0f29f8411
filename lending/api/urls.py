from django.urls import path

from lending.api import views

urlpatterns = [
    path("loan-requests/", views.LoanRequestListApi.as_view(), name="api-loan-requests"),
    path("loan-requests/<int:request_id>/", views.LoanRequestDetailApi.as_view(),
         name="api-loan-request"),
    path("loan-requests/<int:request_id>/fund/", views.LoanRequestFundApi.as_view(),
         name="api-loan-request-fund"),
    path("loan-requests/<int:request_id>/cancel/", views.LoanRequestCancelApi.as_view(),
         name="api-loan-request-cancel"),
    path("loan-offers/", views.LoanOfferListApi.as_view(), name="api-loan-offers"),
    path("loan-offers/<int:offer_id>/", views.LoanOfferDetailApi.as_view(), name="api-loan-offer"),
    path("loan-offers/<int:offer_id>/take/", views.LoanOfferTakeApi.as_view(),
         name="api-loan-offer-take"),
    path("loan-offers/<int:offer_id>/cancel/", views.LoanOfferCancelApi.as_view(),
         name="api-loan-offer-cancel"),
    path("loans/", views.LoanListApi.as_view(), name="api-loans"),
    path("loans/<int:loan_id>/", views.LoanDetailApi.as_view(), name="api-loan"),
    path("loans/<int:loan_id>/repay/", views.LoanRepayApi.as_view(), name="api-loan-repay"),
    path("loans/<int:loan_id>/collateral/", views.LoanCollateralApi.as_view(),
         name="api-loan-collateral"),
    path("loans/<int:loan_id>/disputes/", views.LoanDisputeListApi.as_view(),
         name="api-loan-disputes"),
    path("loan-disputes/<int:dispute_id>/", views.LoanDisputeDetailApi.as_view(),
         name="api-loan-dispute"),
    path("loan-disputes/<int:dispute_id>/statements/", views.LoanDisputeStatementApi.as_view(),
         name="api-loan-dispute-statements"),
]  # fmt: skip
