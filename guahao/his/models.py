"""How guahao reaches each hospital's HIS: one connection per hospital, edited in the console."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from guahao.fields import EncryptedTextField


class HisConnection(models.Model):
    """A hospital without one runs on the deployment's default adapter (GUAHAO_HIS_ADAPTER)."""

    class Mode(models.TextChoices):
        LOCAL_POOL = "local_pool", "本地号源池"
        HIS_LOCK = "his_lock", "HIS 锁号"
        HIS_NO_LOCK = "his_no_lock", "HIS 无锁号接口"

    hospital = models.OneToOneField(
        "catalog.Hospital", on_delete=models.CASCADE, related_name="his_connection", verbose_name="医院"
    )
    mode = models.CharField(
        "对接方式",
        max_length=20,
        choices=Mode.choices,
        default=Mode.LOCAL_POOL,
        help_text="本地号源池：号源由本平台维护，不连接 HIS；HIS 锁号：锁号、挂号都在 HIS 完成；"
        "HIS 无锁号接口：锁号期间由本平台保留号源，支付成功后再向 HIS 挂号",
    )
    base_url = models.URLField("HIS 网关地址", max_length=300, blank=True, help_text="如 https://his-gateway.example.cn/guahao/v1")
    hospital_code = models.CharField(
        "医院编码", max_length=64, blank=True, help_text="请求头 X-His-Hospital 中发送的编码，由 HIS 方提供"
    )
    # SM4-encrypted at rest like patients' data; the console never shows it back.
    secret = EncryptedTextField("共享密钥", blank=True)
    connect_timeout_seconds = models.FloatField(
        "连接超时（秒）", default=3.0, validators=[MinValueValidator(0.1), MaxValueValidator(30)]
    )
    read_timeout_seconds = models.FloatField(
        "读取超时（秒）", default=5.0, validators=[MinValueValidator(0.1), MaxValueValidator(60)]
    )
    enabled = models.BooleanField(
        "启用",
        default=True,
        help_text="停用后不再调用 HIS：患者锁号会提示医院系统暂时无法响应，待处理的释放、挂号、退号在重新启用后继续（用于 HIS 停机维护）",
    )
    updated_at = models.DateTimeField("更新时间", auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "HIS 连接"

    def __str__(self) -> str:
        return f"{self.hospital} · {self.get_mode_display()}"

    @property
    def uses_his(self) -> bool:
        return self.mode != self.Mode.LOCAL_POOL

    def clean(self) -> None:
        if not self.uses_his:
            return
        missing = {
            name: "连接 HIS 时必填"
            for name, value in (("base_url", self.base_url), ("hospital_code", self.hospital_code))
            if not value
        }
        if missing:
            raise ValidationError(missing)
        if not self.secret:
            raise ValidationError("连接 HIS 时必须设置共享密钥")


# Schedule sync and callback state live in their own module, registered with this app here.
from guahao.his.models_sync import HisCallbackNonce, HisSyncState  # noqa: E402

__all__ = ["HisCallbackNonce", "HisConnection", "HisSyncState"]
