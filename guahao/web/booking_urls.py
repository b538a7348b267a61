"""The booking and 就诊人 pages (H2): mounted by guahao/web/urls.py under the `web` namespace."""

from django.urls import path

from guahao.web import views_booking, views_patients

urlpatterns = [
    path("sessions/<int:session_id>", views_booking.session_page, name="session"),
    path("holds", views_booking.create_hold, name="hold-create"),
    path("holds/<int:hold_id>", views_booking.hold_page, name="hold"),
    path("holds/<int:hold_id>/pay", views_booking.pay, name="hold-pay"),
    path("holds/<int:hold_id>/check", views_booking.check_payment, name="hold-check"),
    path("holds/<int:hold_id>/release", views_booking.release, name="hold-release"),
    path("holds/<int:hold_id>/result", views_booking.hold_result, name="hold-result"),
    path("me/registrations", views_booking.registrations, name="registrations"),
    path(
        "me/registrations/<int:registration_id>/cancel",
        views_booking.cancel_registration,
        name="registration-cancel",
    ),
    path("me/patients", views_patients.patients, name="patients"),
    path("me/patients/add", views_patients.add_patient, name="patient-add"),
    path("me/patients/<int:patient_id>/remove", views_patients.remove_patient, name="patient-remove"),
    path("me/patients/<int:patient_id>/default", views_patients.set_default, name="patient-default"),
]
