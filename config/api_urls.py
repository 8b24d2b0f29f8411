"""/api/v1/: one table of every endpoint (docs/architecture.md's REST API)."""

from django.urls import include, path

from accounts.api import views as accounts
from disputes.api import views as disputes
from escrow.api import trades
from escrow.api import views as escrow
from ledger.api import deposits as chain_deposits
from ledger.api import views as ledger
from ledger.evm import reserves_api
from marketplace.api import payment_accounts
from marketplace.api import views as market

urlpatterns = [
    path("auth/token/", accounts.TokenObtainApi.as_view(), name="api-token"),
    path("api-keys/", accounts.ApiKeyListApi.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>/", accounts.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("offers/", market.OfferListApi.as_view(), name="api-offers"),
    path("offers/<int:offer_id>/", market.OfferDetailApi.as_view(), name="api-offer"),
    path("offers/<int:offer_id>/take/", trades.OfferTakeApi.as_view(), name="api-offer-take"),
    path("match/", trades.MatchApi.as_view(), name="api-match"),
    path("prices/", market.PriceListApi.as_view(), name="api-prices"),
    # issue 20: a trader's public record (online status, release time)
    path("traders/<str:username>/", trades.TraderProfileApi.as_view(), name="api-trader"),
    path(
        "payment-accounts/",
        payment_accounts.PaymentAccountListApi.as_view(),
        name="api-payment-accounts",
    ),
    path(
        "payment-accounts/<int:account_id>/",
        payment_accounts.PaymentAccountDetailApi.as_view(),
        name="api-payment-account",
    ),
    path("trades/", trades.TradeListApi.as_view(), name="api-trades"),
    path("trades/<int:trade_id>/", trades.TradeDetailApi.as_view(), name="api-trade"),
    path(
        "trades/<int:trade_id>/mark-paid/",
        escrow.TradeMarkPaidApi.as_view(),
        name="api-trade-mark-paid",
    ),
    path(
        "trades/<int:trade_id>/release/", escrow.TradeReleaseApi.as_view(), name="api-trade-release"
    ),
    path("trades/<int:trade_id>/cancel/", escrow.TradeCancelApi.as_view(), name="api-trade-cancel"),
    path(
        "trades/<int:trade_id>/dispute/",
        disputes.TradeDisputeApi.as_view(),
        name="api-trade-dispute",
    ),
    path(
        "trades/<int:trade_id>/messages/",
        trades.TradeMessagesApi.as_view(),
        name="api-trade-messages",
    ),
    path(
        "trades/<int:trade_id>/messages/<int:message_id>/attachment/",
        trades.TradeMessageAttachmentApi.as_view(),
        name="api-trade-message-attachment",
    ),
    path(
        "trades/<int:trade_id>/feedback/",
        trades.TradeFeedbackApi.as_view(),
        name="api-trade-feedback",
    ),
    path(
        "feedback/<int:feedback_id>/reply/",
        trades.FeedbackReplyApi.as_view(),
        name="api-feedback-reply",
    ),
    path("kyc/documents/", accounts.KycDocumentListApi.as_view(), name="api-kyc-documents"),
    path(
        "kyc/documents/<int:document_id>/",
        accounts.KycDocumentDetailApi.as_view(),
        name="api-kyc-document",
    ),
    path("relations/", accounts.RelationListApi.as_view(), name="api-relations"),
    path(
        "relations/<int:relation_id>/",
        accounts.RelationDetailApi.as_view(),
        name="api-relation",
    ),
    path("wallets/", ledger.WalletListApi.as_view(), name="api-wallets"),
    path(
        "wallets/<str:asset>/withdrawals/",
        ledger.WithdrawalCreateApi.as_view(),
        name="api-withdrawals",
    ),
    path(
        "wallets/<str:asset>/deposit-address/",
        chain_deposits.DepositAddressApi.as_view(),
        name="api-deposit-address",
    ),
    path("deposits/", chain_deposits.ChainDepositListApi.as_view(), name="api-chain-deposits"),
    path("transfers/", ledger.TransferListApi.as_view(), name="api-transfers"),
    path("ledger/checkpoints/latest/", ledger.CheckpointLatestApi.as_view(), name="api-checkpoint"),
    path("ledger/entries/<int:seq>/proof/", ledger.InclusionProofApi.as_view(), name="api-proof"),
    path("ledger/consistency/", ledger.ConsistencyProofApi.as_view(), name="api-consistency"),
    path("ledger/public-key/", ledger.PublicKeyApi.as_view(), name="api-public-key"),
    # --- the proof of reserves (ledger/evm/reserves_api.py)
    path("reserves/", reserves_api.ReserveProofListApi.as_view(), name="api-reserves"),
    path(
        "reserves/<int:proof_id>/",
        reserves_api.ReserveProofDetailApi.as_view(),
        name="api-reserve-proof",
    ),
    path(
        "reserves/<int:proof_id>/proof/",
        reserves_api.ReserveInclusionProofApi.as_view(),
        name="api-reserve-inclusion",
    ),
    # --- end of the proof of reserves
    path("", include("lending.api.urls")),
    path("", include("notifications.api.urls")),
]
