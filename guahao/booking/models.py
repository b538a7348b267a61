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

    account = models.ForeignKey("patients.Account", on_delete=models.PROTECT, related_name="holds")
    slot = models.ForeignKey("scheduling.Slot", on_delete=models.PROTECT, related_name="holds")
    session = models.ForeignKey("scheduling.Session", on_delete=models.PROTECT, related_name="holds")
    state = models.CharField("状态", max_length=12, choices=HoldState.choices, default=HoldState.HELD)
    expires_at = models.DateTimeField("锁号截止")
    his_lock_id = models.CharField(max_length=64, blank=True)
    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.PROTECT, null=True, blank=True, related_name="holds"
    )
    channel = models.CharField("支付渠道", max_length=10, choices=Channel.choices, blank=True)
    insurance = models.BooleanField("医保支付", default=False)
    fee_fen = models.PositiveIntegerField("挂号费（分）")
    # The payment that won the slot: set when the hold moves to REGISTERING. Any other paid
    # payment of this hold is refunded.
    payment = models.ForeignKey(
        "payments.Payment", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
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

    hold = models.OneToOneField(Hold, on_delete=models.PROTECT, related_name="registration")
    account = models.ForeignKey("patients.Account", on_delete=models.PROTECT, related_name="registrations")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="registrations")
    slot = models.ForeignKey("scheduling.Slot", on_delete=models.PROTECT, related_name="registrations")
    session = models.ForeignKey("scheduling.Session", on_delete=models.PROTECT, related_name="registrations")
    registration_no = models.CharField("挂号单号", max_length=40, unique=True)
    status = models.CharField(
        "状态", max_length=12, choices=RegistrationStatus.choices, default=RegistrationStatus.BOOKED
    )
    fee_fen = models.PositiveIntegerField("挂号费（分）")
    booked_at = models.DateTimeField("预约时间")
    cancelled_at = models.DateTimeField("取消时间", null=True, blank=True)
    cancel_reason = models.CharField("取消原因", max_length=100, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "挂号单"
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
