"""Visiting patients become per-account records (identity and abuse).

Before: one Patient row per real person (unique id_index), shared by accounts through
AccountPatient, name and birth date in clear. After: each account's visiting patient is its own
Patient row (account, relation, removed_at), id_index unique per account among active rows, name
and birth date encrypted, name_index and phone_index for the console's exact search;
AccountPatient is gone.

Data: every shared row becomes one record per account that linked it, or that has a hold or
registration for it (those without a link get a record marked removed, so the booking keeps
pointing at a record of its own account). The first such account keeps the original row; the others
get copies (with copies of the HIS cards), and each hold and registration is repointed to the record
of hold.account / registration.account. A shared row no account links or books is deleted.
Works on SQLite and PostgreSQL; reversible (records of one person merge back into one shared row).
"""

import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone

import guahao.fields


def _index(value: str, purpose: str) -> str:
    from guahao import pii

    return pii.blind_index(value, purpose=purpose)


def _fire_deferred_checks(schema_editor) -> None:
    # PostgreSQL refuses ALTER TABLE on a table with pending deferred FK checks in the same
    # transaction ("pending trigger events"): run them now, before the schema steps that follow.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        schema_editor.execute("SET CONSTRAINTS ALL DEFERRED")


def split_shared_patients(apps, schema_editor) -> None:
    Patient = apps.get_model("patients", "Patient")
    AccountPatient = apps.get_model("patients", "AccountPatient")
    PatientCard = apps.get_model("patients", "PatientCard")
    Hold = apps.get_model("booking", "Hold")
    Registration = apps.get_model("booking", "Registration")
    now = timezone.now()

    for shared_id in list(Patient.objects.order_by("id").values_list("id", flat=True)):
        shared = Patient.objects.get(id=shared_id)
        links = {
            link.account_id: link
            for link in AccountPatient.objects.filter(patient_id=shared_id).order_by("created_at", "id")
        }
        booked_by = set(Hold.objects.filter(patient_id=shared_id).values_list("account_id", flat=True))
        booked_by |= set(Registration.objects.filter(patient_id=shared_id).values_list("account_id", flat=True))
        accounts = list(links) + sorted(booked_by - set(links))
        if not accounts:
            shared.delete()  # no account sees it and nothing refers to it
            continue
        cards = list(PatientCard.objects.filter(patient_id=shared_id))
        entries = {
            "name_enc": shared.name,
            "name_index": _index(shared.name, "name"),
            "phone_index": _index(shared.phone, "phone"),
            "birth_date_enc": shared.birth_date,
        }
        for n, account_id in enumerate(accounts):
            link = links.get(account_id)
            own = {
                "account_id": account_id,
                "relation": link.relation if link else "other",
                "removed_at": None if link else now,
            }
            if n == 0:
                record = shared
                for field, value in (entries | own).items():
                    setattr(record, field, value)
                record.save()
            else:
                record = Patient.objects.create(
                    id_type=shared.id_type,
                    id_number=shared.id_number,
                    id_index=shared.id_index,
                    sex=shared.sex,
                    phone=shared.phone,
                    verified_at=shared.verified_at,
                    # the old NOT NULL columns, dropped right after this step
                    name=shared.name,
                    birth_date=shared.birth_date,
                    **entries,
                    **own,
                )
                PatientCard.objects.bulk_create(
                    PatientCard(patient_id=record.id, hospital_id=c.hospital_id, card_no=c.card_no) for c in cards
                )
                Hold.objects.filter(patient_id=shared_id, account_id=account_id).update(patient_id=record.id)
                Registration.objects.filter(patient_id=shared_id, account_id=account_id).update(patient_id=record.id)
            # When this account added the person, not when the shared row was first made.
            Patient.objects.filter(id=record.id).update(created_at=link.created_at if link else shared.created_at)
    _fire_deferred_checks(schema_editor)


def merge_per_account_patients(apps, schema_editor) -> None:
    """Reverse: one shared row per real person again, linked to the accounts that still list it."""
    Patient = apps.get_model("patients", "Patient")
    AccountPatient = apps.get_model("patients", "AccountPatient")
    PatientCard = apps.get_model("patients", "PatientCard")
    Hold = apps.get_model("booking", "Hold")
    Registration = apps.get_model("booking", "Registration")

    id_indexes = Patient.objects.order_by().values_list("id_index", flat=True).distinct()
    for id_index in list(id_indexes):
        records = list(Patient.objects.filter(id_index=id_index).order_by("removed_at", "id"))
        keep = records[0]  # an active record's entries win over a removed one's
        keep.name = keep.name_enc
        keep.birth_date = keep.birth_date_enc
        keep.save()
        hospitals = set(PatientCard.objects.filter(patient_id=keep.id).values_list("hospital_id", flat=True))
        for record in records:
            if record.removed_at is None:
                AccountPatient.objects.create(account_id=record.account_id, patient_id=keep.id, relation=record.relation)
            if record.id == keep.id:
                continue
            Hold.objects.filter(patient_id=record.id).update(patient_id=keep.id)
            Registration.objects.filter(patient_id=record.id).update(patient_id=keep.id)
            for card in PatientCard.objects.filter(patient_id=record.id):
                if card.hospital_id not in hospitals:
                    PatientCard.objects.filter(id=card.id).update(patient_id=keep.id)
                    hospitals.add(card.hospital_id)
            record.delete()
    _fire_deferred_checks(schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("booking", "0002_initial"),
        ("patients", "0002_auth_token_devices"),
    ]

    operations = [
        migrations.AddField(
            model_name="patient",
            name="account",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="patients",
                to="patients.account",
            ),
        ),
        migrations.AddField(
            model_name="patient",
            name="relation",
            field=models.CharField(
                choices=[
                    ("self", "本人"),
                    ("spouse", "配偶"),
                    ("child", "子女"),
                    ("parent", "父母"),
                    ("other", "其他"),
                ],
                default="other",
                max_length=10,
                verbose_name="关系",
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="patient",
            name="name_index",
            field=models.CharField(db_index=True, default="", max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="patient",
            name="phone_index",
            field=models.CharField(db_index=True, default="", max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="patient",
            name="removed_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="移除时间"),
        ),
        migrations.AddField(
            model_name="patient",
            name="name_enc",
            field=guahao.fields.EncryptedTextField(default="", verbose_name="姓名"),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="patient",
            name="birth_date_enc",
            field=guahao.fields.EncryptedDateField(null=True, verbose_name="出生日期"),
        ),
        migrations.AlterField(
            model_name="patient",
            name="id_index",
            field=models.CharField(db_index=True, max_length=64),
        ),
        # Nullable for the way back: the reverse re-adds the clear columns before refilling them.
        migrations.AlterField(
            model_name="patient",
            name="name",
            field=models.CharField(max_length=40, null=True, verbose_name="姓名"),
        ),
        migrations.AlterField(
            model_name="patient",
            name="birth_date",
            field=models.DateField(null=True, verbose_name="出生日期"),
        ),
        migrations.RunPython(split_shared_patients, merge_per_account_patients),
        migrations.RemoveField(model_name="patient", name="name"),
        migrations.RemoveField(model_name="patient", name="birth_date"),
        migrations.RenameField(model_name="patient", old_name="name_enc", new_name="name"),
        migrations.RenameField(model_name="patient", old_name="birth_date_enc", new_name="birth_date"),
        migrations.AlterField(
            model_name="patient",
            name="birth_date",
            field=guahao.fields.EncryptedDateField(verbose_name="出生日期"),
        ),
        migrations.AlterField(
            model_name="patient",
            name="account",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="patients",
                to="patients.account",
            ),
        ),
        migrations.AlterField(
            model_name="patient",
            name="created_at",
            field=models.DateTimeField(auto_now_add=True, verbose_name="添加时间"),
        ),
        migrations.DeleteModel(name="AccountPatient"),
        migrations.AddConstraint(
            model_name="patient",
            constraint=models.UniqueConstraint(
                condition=models.Q(("removed_at__isnull", True)),
                fields=("account", "id_index"),
                name="patient_once_per_account",
            ),
        ),
        migrations.AddConstraint(
            model_name="patient",
            constraint=models.UniqueConstraint(
                condition=models.Q(("relation", "self"), ("removed_at__isnull", True)),
                fields=("account",),
                name="patient_one_self_per_account",
            ),
        ),
        migrations.CreateModel(
            name="PatientAddAttempt",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("client_ip", models.GenericIPAddressField(blank=True, null=True, verbose_name="来源 IP")),
                ("id_index", models.CharField(blank=True, db_index=True, max_length=64)),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("added", "已添加"),
                            ("realname_rejected", "实名核验未通过"),
                            ("rate_limited", "频率超限"),
                            ("invalid", "输入有误"),
                            ("exists", "已在列表中"),
                            ("refused", "超出数量或本人限制"),
                            ("unavailable", "实名服务不可用"),
                        ],
                        max_length=20,
                        verbose_name="结果",
                    ),
                ),
                ("created_at", models.DateTimeField(db_index=True, verbose_name="时间")),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="patient_add_attempts",
                        to="patients.account",
                        verbose_name="账号",
                    ),
                ),
                (
                    "patient",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="patients.patient",
                        verbose_name="就诊人",
                    ),
                ),
            ],
            options={
                "verbose_name": "添加就诊人记录",
                "verbose_name_plural": "添加就诊人记录",
                "indexes": [models.Index(fields=["account", "created_at"], name="patient_add_account_time")],
            },
        ),
    ]
