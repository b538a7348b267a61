"""The default visiting patient (默认就诊人) the booking pages preselect: at most one per account
among active records (a partial unique index, on SQLite and PostgreSQL alike)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('patients', '0003_patient_per_account'),
    ]

    operations = [
        migrations.AddField(
            model_name='patient',
            name='is_default',
            field=models.BooleanField(default=False, verbose_name='默认就诊人'),
        ),
        migrations.AddConstraint(
            model_name='patient',
            constraint=models.UniqueConstraint(condition=models.Q(('is_default', True), ('removed_at__isnull', True)), fields=('account',), name='patient_one_default_per_account'),
        ),
    ]
