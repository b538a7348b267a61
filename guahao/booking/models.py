from __future__ import annotations

from django.db import models

from guahao.booking.states import (
    ACTIVE_REGISTRATION_STATES,
    LIVE_HOLD_STATES,
    HoldState,
    RegistrationStatus,
)
from guahao.payments.channels import PaymentChannel


class Hold(models.Model):
    """A patient's temporary claim on a slot (锁号). Carries the choices made during the lock."""

    Channel = PaymentChannel  # one list of channels for hospitals, holds and payments

    account = models.ForeignKey("patients.Account", on_delete=models.PROTECT, related_name="holds", verbose_name="账号")
    slot = models.ForeignKey("scheduling.Slot", on_delete=models.PROTECT, related_name="holds", verbose_name="号源")
    session = models.ForeignKey("scheduling.Session", on_delete=models.PROTECT, related_name="holds", verbose_name="排班")
    state = models.CharField("状态", max_length=12, choices=HoldState.choices, default=HoldState.HELD)
    expires_at = models.DateTimeField("锁号截止")
    his_lock_id = models.CharField(max_length=64, blank=True)
    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.PROTECT, null=True, blank=True, related_name="holds", verbose_name="就诊人"
    )
    channel = models.CharField("支付渠道", max_length=10, choices=Channel.choices, blank=True)
    insurance = models.BooleanField("医保支付", default=False)
    fee_fen = models.PositiveIntegerField("挂号费（分）")
    # The payment that won the slot: set when the hold moves to REGISTERING. Any other paid
    # payment of this hold is refunded.
    payment = models.ForeignKey(
        "payments.Payment", on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name="支付"
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = verbose_name_plural = "锁号"
        indexes = [models.Index(fields=["account", "created_at"]), models.Index(fields=["state", "expires_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["slot"], condition=models.Q(state__in=LIVE_HOLD_STATES), name="one_live_hold_per_slot"
            )
        ]

    def __str__(self) -> str:
        return f"锁号 {self.id}（{self.get_state_display()}）"


class Registration(models.Model):
    """A registration (挂号单). Exists only for a hold that succeeded."""

    hold = models.OneToOneField(Hold, on_delete=models.PROTECT, related_name="registration", verbose_name="锁号")
    account = models.ForeignKey("patients.Account", on_delete=models.PROTECT, related_name="registrations", verbose_name="账号")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="registrations", verbose_name="就诊人")
    slot = models.ForeignKey("scheduling.Slot", on_delete=models.PROTECT, related_name="registrations", verbose_name="号源")
    session = models.ForeignKey("scheduling.Session", on_delete=models.PROTECT, related_name="registrations", verbose_name="排班")
    registration_no = models.CharField("挂号单号", max_length=40, unique=True)
    status = models.CharField(
        "状态", max_length=12, choices=RegistrationStatus.choices, default=RegistrationStatus.BOOKED
    )
    fee_fen = models.PositiveIntegerField("挂号费（分）")
    booked_at = models.DateTimeField("预约时间")
    cancelled_at = models.DateTimeField("取消时间", null=True, blank=True)
    cancel_reason = models.CharField("取消原因", max_length=100, blank=True)
    # Who cancelled for the patient (a staff username), empty when the patient or 停诊 did.
    cancelled_by = models.CharField("代取消员工", max_length=150, blank=True)
    # The patient's own cancel (not staff's, not 停诊): what the repeated-cancellation rule counts.
    cancelled_by_patient = models.BooleanField("患者自行退号", default=False)
    no_show_at = models.DateTimeField("记为爽约时间", null=True, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "挂号单"
        permissions = [
            ("cancel_on_behalf", "代患者取消并退费"),
            ("mark_attendance", "标记取号、就诊、爽约"),
            ("export_registration", "导出挂号单"),
        ]
        indexes = [models.Index(fields=["account", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["slot"],
                condition=models.Q(status__in=ACTIVE_REGISTRATION_STATES),
                name="one_active_registration_per_slot",
            )
        ]

    def __str__(self) -> str:
        return self.registration_no
