"""The ledger's starting data and guards: the traded assets (with their precision), and, on
PostgreSQL, triggers with which the database itself refuses to change or delete a sealed ledger
entry, a Merkle node or a checkpoint (only the superuser, by switching triggers off, can; and
verify_ledger catches that). Moderators add assets in the admin."""

from django.db import migrations

ASSETS = [("BTC", "Bitcoin", 8), ("ETH", "Ether", 18), ("USDT", "Tether USD", 6)]
FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_refuse_rewrite() RETURNS trigger AS $$
BEGIN
    IF TG_TABLE_NAME = 'ledger_transfer' THEN
        IF OLD.seq IS NULL THEN
            RETURN NEW;  -- not sealed yet: the sequencer is sealing it
        END IF;
    END IF;
    RAISE EXCEPTION 'ledger is append-only: % of % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

TRIGGERS = [
    ("ledger_transfer", "UPDATE OR DELETE"),
    ("ledger_merklenode", "UPDATE OR DELETE"),
    ("ledger_checkpoint", "UPDATE OR DELETE"),
]


def seed_assets(apps, schema_editor):
    Asset = apps.get_model("ledger", "Asset")
    for code, name, precision in ASSETS:
        Asset.objects.get_or_create(code=code, defaults={"name": name, "precision": precision})


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION, params=None)
    for table, ops in TRIGGERS:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE {ops} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION ledger_refuse_rewrite()"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, _ in TRIGGERS:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS ledger_refuse_rewrite()")


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [
        migrations.RunPython(seed_assets, migrations.RunPython.noop),
        migrations.RunPython(forwards, backwards),
    ]
