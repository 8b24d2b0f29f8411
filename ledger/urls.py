from django.urls import path

from ledger import views

urlpatterns = [
    path("wallet/", views.wallet, name="wallet"),
    path("wallet/chain-deposits/", views.wallet_chain_deposits, name="wallet_chain_deposits"),
    path("wallet/proof/<int:seq>/", views.transfer_proof, name="transfer_proof"),
    path(
        "wallet/transfers/<int:transfer_id>/proof/",
        views.transfer_proof_by_id,
        name="transfer_proof_by_id",
    ),
]
