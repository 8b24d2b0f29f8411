"""The open holds (ledger.models.OpenHold), kept by PostgreSQL: a statement-level trigger on
ledger_transfer adds the pending transfers a statement inserts and removes those its posts and
voids resolve (one INSERT and one DELETE a statement, however many rows: the settlement's batches
insert thousands at once), then the holds open today are copied in."""

import django.db.models.deletion
from django.db import migrations, models


TRACK_SQL = """
CREATE FUNCTION ledger_open_holds_track() RETURNS trigger AS $$
BEGIN
    INSERT INTO ledger_openhold (transfer_id, account_id, asset_id, kind, amount)
    SELECT id, debit_account_id, asset_id, kind, amount FROM inserted WHERE flags = 'pending';
    DELETE FROM ledger_openhold h USING inserted r
    WHERE r.pending_id IS NOT NULL AND h.transfer_id = r.pending_id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_transfer_open_holds AFTER INSERT ON ledger_transfer
REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION ledger_open_holds_track();

-- Every hold goes in and out again: a small table of much churn, vacuumed after every 1,000 dead
-- rows rather than after a fifth of its size.
ALTER TABLE ledger_openhold SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000);
"""

# The holds open when the trigger starts (tests run it again on a copy).
BACKFILL_SQL = """
INSERT INTO ledger_openhold (transfer_id, account_id, asset_id, kind, amount)
SELECT t.id, t.debit_account_id, t.asset_id, t.kind, t.amount FROM ledger_transfer t
WHERE t.flags = 'pending' AND NOT EXISTS (SELECT 1 FROM ledger_transfer r WHERE r.pending_id = t.id);
"""

UNTRACK_SQL = """
DROP TRIGGER IF EXISTS ledger_transfer_open_holds ON ledger_transfer;
DROP FUNCTION IF EXISTS ledger_open_holds_track();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('ledger', '0010_reserves_reconciliation_and_proofs'),
    ]

    operations = [
        migrations.CreateModel(
            name='OpenHold',
            fields=[
                ('transfer', models.OneToOneField(on_delete=django.db.models.deletion.DO_NOTHING, primary_key=True, related_name='+', serialize=False, to='ledger.transfer')),
                ('kind', models.CharField(choices=[('deposit', 'Deposit'), ('withdrawal', 'Withdrawal'), ('escrow_hold', 'Escrow Hold'), ('trade_payout', 'Trade Payout'), ('trade_fee', 'Trade Fee'), ('loan_collateral', 'Loan Collateral'), ('loan_funding', 'Loan Funding'), ('loan_installment', 'Loan Installment'), ('loan_liquidation', 'Loan Liquidation'), ('loan_fee', 'Loan Fee'), ('loan_compensate', 'Loan Compensation'), ('chain_sweep', 'Chain Sweep'), ('chain_gas', 'Chain Gas')], max_length=16)),
                ('amount', models.DecimalField(decimal_places=18, max_digits=40)),
                ('account', models.ForeignKey(on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='ledger.ledgeraccount')),
                ('asset', models.ForeignKey(on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='ledger.asset')),
            ],
        ),
        migrations.RunSQL(TRACK_SQL + BACKFILL_SQL, reverse_sql=UNTRACK_SQL),
    ]
