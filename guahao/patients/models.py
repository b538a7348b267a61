from __future__ import annotations

from django.db import models

from guahao.fields import EncryptedTextField


class Account(models.Model):
    """A phone-verified user. The phone is stored encrypted; `phone_index` finds it."""

    phone = EncryptedTextField("手机号")
    phone_index = models.CharField(max_length=64, unique=True)
    wechat_openid = models.CharField(max_length=64, null=True, blank=True, unique=True)
    is_active = models.BooleanField("启用", default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = verbose_name_plural = "账号"

    def __str__(self) -> str:
        from guahao.pii import mask_phone

        return mask_phone(self.phone)


class SmsCode(models.Model):
    phone_index = models.CharField(max_length=64, db_index=True)
    code_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    failed_attempts = models.PositiveSmallIntegerField(default=0)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "短信验证码"

    def __str__(self) -> str:
        return f"短信验证码 #{self.pk}"


class AuthToken(models.Model):
    """A bearer token; only its SHA-256 is stored."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = verbose_name_plural = "登录令牌"

    def __str__(self) -> str:
        return f"登录令牌 #{self.pk}"


class Patient(models.Model):
    """A real-name person. One row per real person (by ID), shared by every account that adds them."""

    class IdType(models.TextChoices):
        RESIDENT = "resident", "居民身份证"
        HMT_RESIDENCE = "hmt_residence", "港澳台居民居住证"
        FOREIGNER = "foreigner", "外国人永久居留身份证"

    class Sex(models.TextChoices):
        MALE = "M", "男"
        FEMALE = "F", "女"

    name = models.CharField("姓名", max_length=40)
    id_type = models.CharField("证件类型", max_length=20, choices=IdType.choices)
    id_number = EncryptedTextField("证件号码")
    id_index = models.CharField(max_length=64, unique=True)
    sex = models.CharField("性别", max_length=1, choices=Sex.choices)
    birth_date = models.DateField("出生日期")
    phone = EncryptedTextField("手机号")
    verified_at = models.DateTimeField("实名核验时间", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = verbose_name_plural = "就诊人"

    def __str__(self) -> str:
        from guahao.pii import mask_name

        return mask_name(self.name)


class AccountPatient(models.Model):
    class Relation(models.TextChoices):
        SELF = "self", "本人"
        SPOUSE = "spouse", "配偶"
        CHILD = "child", "子女"
        PARENT = "parent", "父母"
        OTHER = "other", "其他"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="patient_links")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="account_links")
    relation = models.CharField("关系", max_length=10, choices=Relation.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = verbose_name_plural = "账号就诊人"
        constraints = [
            models.UniqueConstraint(fields=["account", "patient"], name="account_patient_once"),
            models.UniqueConstraint(
                fields=["account"], condition=models.Q(relation="self"), name="account_one_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account} · {self.patient}（{self.get_relation_display()}）"


class PatientCard(models.Model):
    """The HIS's own patient id for a patient at one hospital."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="cards")
    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE)
    card_no = models.CharField("就诊卡号", max_length=40)

    class Meta:
        verbose_name = verbose_name_plural = "就诊卡"
        constraints = [
            models.UniqueConstraint(fields=["patient", "hospital"], name="one_card_per_hospital")
        ]

    def __str__(self) -> str:
        return self.card_no
