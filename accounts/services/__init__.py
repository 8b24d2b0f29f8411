"""Every write of accounts: API keys and tokens (keys), what a password change does to them and
to sessions (credentials), standing and limits (standing), KYC documents (kyc), trusted and
blocked lists (relations), account links (links), two-factor authentication (two_factor), the
fund password asked before funds move (funds), browser sessions (sessions), the time zone.
Import from here."""

from accounts.services.credentials import (
    credentials_after_password_change,
    ensure_withdrawals_unlocked,
    sessions_end_others,
)
from accounts.services.funds import (
    funds_confirm,
    funds_confirm_factor,
    funds_confirm_failures,
)
from accounts.services.keys import (
    KEY_PREFIX,
    api_key_create,
    api_key_revoke,
    auth_cache_forget,
    auth_cache_key,
    hash_key,
    token_rotate,
)
from accounts.services.kyc import (
    DEFAULT_KYC_MAX_BYTES,
    DEFAULT_KYC_TYPES,
    MAX_PENDING_DOCUMENTS,
    kyc_document_delete,
    kyc_document_review,
    kyc_document_submit,
    kyc_file_read,
)
from accounts.services.links import account_links_record, link_value_hash, signup_allowed
from accounts.services.relations import (
    trader_relation_add,
    trader_relation_remove,
)
from accounts.services.sessions import (
    browser_session_revoke,
    browser_session_touch,
    language_cache_key,
    profile_language_set,
    profile_time_zone_set,
    time_zone_cache_key,
)
from accounts.services.standing import (
    MAX_SUSPENSION_DAYS,
    ensure_can_trade,
    ensure_can_withdraw,
    profile_freeze,
    profile_penalize,
    profile_unfreeze,
    profiles_lock,
    trade_limits_enforce,
    withdrawal_hold_reason,
)
from accounts.services.trading_rules import (
    profile_buying_suspension_set,
    profile_country_set,
)
from accounts.services.two_factor import (
    has_two_factor,
    require_second_factor,
    totp_device,
    totp_disable,
    totp_setup_confirm,
    totp_setup_start,
)

__all__ = [
    "DEFAULT_KYC_MAX_BYTES",
    "DEFAULT_KYC_TYPES",
    "KEY_PREFIX",
    "MAX_PENDING_DOCUMENTS",
    "MAX_SUSPENSION_DAYS",
    "account_links_record",
    "api_key_create",
    "api_key_revoke",
    "auth_cache_forget",
    "auth_cache_key",
    "browser_session_revoke",
    "browser_session_touch",
    "credentials_after_password_change",
    "ensure_can_trade",
    "ensure_can_withdraw",
    "ensure_withdrawals_unlocked",
    "funds_confirm",
    "funds_confirm_factor",
    "funds_confirm_failures",
    "has_two_factor",
    "hash_key",
    "kyc_document_delete",
    "kyc_document_review",
    "kyc_document_submit",
    "kyc_file_read",
    "language_cache_key",
    "link_value_hash",
    "profile_buying_suspension_set",
    "profile_country_set",
    "profile_freeze",
    "profile_language_set",
    "profile_penalize",
    "profile_time_zone_set",
    "profile_unfreeze",
    "profiles_lock",
    "require_second_factor",
    "sessions_end_others",
    "signup_allowed",
    "time_zone_cache_key",
    "token_rotate",
    "totp_device",
    "totp_disable",
    "totp_setup_confirm",
    "totp_setup_start",
    "trade_limits_enforce",
    "trader_relation_add",
    "trader_relation_remove",
    "withdrawal_hold_reason",
]
