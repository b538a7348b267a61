from __future__ import annotations

from django.db import models

from guahao.fields import EncryptedDateField, EncryptedTextField


class Account(models.Model):
    """A phone-verified user. The phone is stored encrypted; `phone_index` finds it."""

    phone = EncryptedTextField("手机号")
    phone_index = models.CharField(max_length=64, unique=True)
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
    """A signed-in device: a bearer token of which only the SHA-256 is stored. It dies 30 days
    after its last use and 90 days after it was made, whichever comes first (`expires_at`)."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="tokens", verbose_name="账号")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField("登录时间")
    last_used_at = models.DateTimeField("最近使用", null=True, blank=True)
    expires_at = models.DateTimeField("失效时间")
    user_agent = models.CharField("设备", max_length=200, blank=True)
    client_ip = models.GenericIPAddressField("登录 IP", null=True, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "登录令牌"

    def __str__(self) -> str:
        return f"登录令牌 #{self.pk}"


class TokenRevocation(models.Model):
    """A token ended before its time (sign-out, a device ended, an account switched off: then
    `key_hash` is empty and every token of the account counts). Processes that remember verified
    tokens read these once a second (patients/tokens.py); kept a day."""

    key_hash = models.CharField(max_length=64, blank=True)
    account_id = models.BigIntegerField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = verbose_name_plural = "登录令牌注销记录"

    def __str__(self) -> str:
        return f"登录令牌注销 #{self.pk}"


class Patient(models.Model):
    """A visiting patient (就诊人) as one account entered it: its own record of what that account
    typed (name, phone, relation) plus what the ID itself encodes (sex, birth date). Never shared
    between accounts; the real person behind it is known only by `id_index`, which the rules that
    follow the person use (bans, duplicate bookings). Removing it hides it (`removed_at`): holds and
    registrations keep referring to it."""

    class IdType(models.TextChoices):
        RESIDENT = "resident", "居民身份证"
        HMT_RESIDENCE = "hmt_residence", "港澳台居民居住证"
        FOREIGNER = "foreigner", "外国人永久居留身份证"

    class Sex(models.TextChoices):
        MALE = "M", "男"
        FEMALE = "F", "女"

    class Relation(models.TextChoices):
        SELF = "self", "本人"
        SPOUSE = "spouse", "配偶"
        CHILD = "child", "子女"
        PARENT = "parent", "父母"
        OTHER = "other", "其他"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="patients", verbose_name="账号")
    relation = models.CharField("关系", max_length=10, choices=Relation.choices)
    name = EncryptedTextField("姓名")
    # Keyed indexes of the full name and the phone: the console's exact search, nothing else.
    name_index = models.CharField(max_length=64, db_index=True)
    id_type = models.CharField("证件类型", max_length=20, choices=IdType.choices)
    id_number = EncryptedTextField("证件号码")
    # The real person (document type + number); unique per account among active records only.
    id_index = models.CharField(max_length=64, db_index=True)
    sex = models.CharField("性别", max_length=1, choices=Sex.choices)
    birth_date = EncryptedDateField("出生日期")
    phone = EncryptedTextField("手机号")
    phone_index = models.CharField(max_length=64, db_index=True)
    verified_at = models.DateTimeField("实名核验时间", null=True, blank=True)
    # The one the booking pages preselect; at most one per account among active records.
    is_default = models.BooleanField("默认就诊人", default=False)
    created_at = models.DateTimeField("添加时间", auto_now_add=True)
    removed_at = models.DateTimeField("移除时间", null=True, blank=True)

    class Meta:
        permissions = [("reveal_personal_data", "查看完整个人信息（留审计记录）")]
        verbose_name = verbose_name_plural = "就诊人"
        constraints = [
            models.UniqueConstraint(
                fields=["account", "id_index"],
                condition=models.Q(removed_at__isnull=True),
                name="patient_once_per_account",
            ),
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(relation="self", removed_at__isnull=True),
                name="patient_one_self_per_account",
            ),
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(is_default=True, removed_at__isnull=True),
                name="patient_one_default_per_account",
            ),
        ]

    def __str__(self) -> str:
        from guahao.pii import mask_name

        return mask_name(self.name)


class PatientAddAttempt(models.Model):
    """One try of an account to add a visiting patient, whatever its outcome: what staff look at
    when someone tries IDs or names. The ID appears only as its blind index."""

    class Outcome(models.TextChoices):
        ADDED = "added", "已添加"
        REALNAME_REJECTED = "realname_rejected", "实名核验未通过"
        RATE_LIMITED = "rate_limited", "频率超限"
        INVALID = "invalid", "输入有误"
        EXISTS = "exists", "已在列表中"
        REFUSED = "refused", "超出数量或本人限制"
        UNAVAILABLE = "unavailable", "实名服务不可用"

    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="patient_add_attempts", verbose_name="账号"
    )
    client_ip = models.GenericIPAddressField("来源 IP", null=True, blank=True)
    id_index = models.CharField(max_length=64, blank=True, db_index=True)
    outcome = models.CharField("结果", max_length=20, choices=Outcome.choices)
    patient = models.ForeignKey(
        Patient, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name="就诊人",
    )  # fmt: skip
    created_at = models.DateTimeField("时间", db_index=True)

    class Meta:
        verbose_name = verbose_name_plural = "添加就诊人记录"
        indexes = [models.Index(fields=["account", "created_at"], name="patient_add_account_time")]

    def __str__(self) -> str:
        return f"添加就诊人记录 #{self.pk}"


class PatientCard(models.Model):
    """The HIS's own patient id for a patient at one hospital."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="cards", verbose_name="就诊人")
    hospital = models.ForeignKey("catalog.Hospital", on_delete=models.CASCADE, verbose_name="医院")
    card_no = models.CharField("就诊卡号", max_length=40)

    class Meta:
        verbose_name = verbose_name_plural = "就诊卡"
        constraints = [
            models.UniqueConstraint(fields=["patient", "hospital"], name="one_card_per_hospital")
        ]

    def __str__(self) -> str:
        return self.card_no
