import factory
from django.contrib.auth import get_user_model


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"trader{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.PostGenerationMethodCall("set_password", "demo-pass-123")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


# --- helpers of the profile tests -----------------------------------------------------------

# The default limits, set explicitly by tests of limits so test settings can't move them.
DEFAULT_LIMITS = {
    0: {"per_trade": "1000", "per_30_days": "5000"},
    1: {"per_trade": "10000", "per_30_days": "50000"},
    2: {"per_trade": "100000", "per_30_days": "1000000"},
}

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4\n" + b"0" * 64


def upload(content: bytes = PNG, name: str = "passport.png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def set_tier(user, tier: int) -> None:
    """A tier as a reviewer's approval leaves it (the review itself is tested on its own)."""
    from accounts.models import Profile
    from accounts.selectors import profile_for

    profile_for(user)
    Profile.objects.filter(user=user).update(kyc_tier=tier)


def reviewer(username: str = "reviewer", *, staff: bool = True, perm: bool = True):
    """A staff user, with or without `accounts.review_kyc`."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username=username, is_staff=staff)
    if perm:
        user.user_permissions.add(Permission.objects.get(codename="review_kyc"))
    return type(user).objects.get(pk=user.pk)  # a fresh object: no stale permission cache


def complete(trade) -> None:
    """Buyer pays, seller releases, the settlement runs: the trade ends completed."""
    from escrow import services as escrow
    from escrow.models import Settlement

    escrow.trade_mark_paid(trade_id=trade.pk, actor=trade.buyer)
    escrow.escrow_release(trade_id=trade.pk, actor=trade.seller)
    escrow.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)
    trade.refresh_from_db()
