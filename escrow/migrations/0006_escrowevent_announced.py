from django.db import migrations, models


class Migration(migrations.Migration):
    """EscrowEvent.announced: the events already there had their news written when they were
    made (inline, before this column), so they are all marked announced; new ones start False."""

    dependencies = [("escrow", "0005_translatable_state_labels")]

    operations = [
        migrations.AddField(
            model_name="escrowevent",
            name="announced",
            field=models.BooleanField(default=True),
        ),
        migrations.AlterField(
            model_name="escrowevent",
            name="announced",
            field=models.BooleanField(default=False),
        ),
        migrations.AddIndex(
            model_name="escrowevent",
            index=models.Index(
                condition=models.Q(("announced", False)),
                fields=["created_at"],
                name="escrow_event_unannounced",
            ),
        ),
    ]
