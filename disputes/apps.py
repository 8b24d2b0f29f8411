from django.apps import AppConfig
from django.db.models.signals import post_migrate

# What a moderator needs for daily work, and nothing more (no superuser needed).
MODERATOR_PERMISSIONS = [
    ("escrow", "decide_trade"),
    ("escrow", "view_escrowevent"),
    ("escrow", "view_settlement"),
    ("disputes", "view_dispute"),
    ("disputes", "change_dispute"),
    ("disputes", "view_evidence"),
    ("disputes", "view_moderatoraction"),
    ("escrow", "view_trade"),
    ("marketplace", "view_offer"),
    ("escrow", "view_trademessage"),
    ("marketplace", "view_priceindex"),
    ("marketplace", "change_priceindex"),
    ("ledger", "view_transfer"),
    ("ledger", "view_ledgeraccount"),
    ("ledger", "view_deposit"),
    ("ledger", "change_deposit"),
    ("ledger", "view_withdrawal"),
    ("ledger", "change_withdrawal"),
    ("ledger", "view_reservereconciliation"),  # the hot wallet page (reserves)
    ("accounts", "view_profile"),
    ("accounts", "change_profile"),
    ("accounts", "review_kyc"),
    ("accounts", "freeze_account"),
    ("accounts", "view_profileevent"),
    ("accounts", "view_kycdocument"),
    ("accounts", "change_kycdocument"),
]


def ensure_moderators_group(**kwargs: object) -> None:
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name="Moderators")
    wanted = Permission.objects.none()
    for app_label, codename in MODERATOR_PERMISSIONS:
        wanted |= Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    group.permissions.add(*wanted)


class DisputesConfig(AppConfig):
    name = "disputes"

    def ready(self) -> None:
        post_migrate.connect(ensure_moderators_group, dispatch_uid="disputes.moderators_group")
        # The trade room (escrow, a layer below) shows the dispute panel and offers the "dispute"
        # action through its hooks.
        from disputes import views
        from escrow import views as room

        if views.trade_room_panel not in room.room_panels:
            room.room_panels.append(views.trade_room_panel)
        room.room_actions["dispute"] = views.OPEN_DISPUTE
        # The moderator assigned to a trade's dispute (and no party to it) may read the trade.
        from disputes import selectors
        from escrow.selectors import trades

        if selectors.assigned_moderator_reads not in trades.trade_readers:
            trades.trade_readers.append(selectors.assigned_moderator_reads)
