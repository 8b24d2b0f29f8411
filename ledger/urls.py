from django.urls import path

from ledger import views
from ledger.evm import reserves_views

urlpatterns = [
    path("wallet/", views.wallet, name="wallet"),
    path("wallet/chain-deposits/", views.wallet_chain_deposits, name="wallet_chain_deposits"),
    path("wallet/proof/<int:seq>/", views.transfer_proof, name="transfer_proof"),
    path(
        "wallet/transfers/<int:transfer_id>/proof/",
        views.transfer_proof_by_id,
        name="transfer_proof_by_id",
    ),
    # --- the proof of reserves (ledger/evm/reserves_views.py)
    path("reserves/", reserves_views.reserves_page, name="reserves"),
    path(
        "reserves/<int:proof_id>.json",
        reserves_views.reserves_published_json,
        name="reserves_published_json",
    ),
    path(
        "reserves/<int:proof_id>/mine.json", reserves_views.reserves_my_proof, name="reserves_mine"
    ),
]
