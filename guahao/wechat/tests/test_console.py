"""The console's 公众号 page: the AppSecret is typed once and never shown back, templates are checked
before they are saved, and staff see their own hospitals' accounts and bindings only."""

from __future__ import annotations

from django.db import connection

from guahao import clock
from guahao.console.models import AuditEntry
from guahao.console.roles import SYSTEM_ADMIN
from guahao.console.testing import console_client, make_staff
from guahao.notifications.models import Topic
from guahao.testing import make_account, make_hospital
from guahao.wechat.models import OfficialAccount, WechatBinding, WechatTemplate

SECRET = "0123456789abcdef0123456789abcdef"
APP_ID = "wx1234567890abcdef"


def form(hospital, **extra) -> dict:
    return {
        "hospital": hospital.pk,
        "app_id": APP_ID,
        "new_app_secret": SECRET,
        "enabled": "on",
        "api_base": "https://api.weixin.qq.com",
        "oauth_base": "https://open.weixin.qq.com",
        "templates-TOTAL_FORMS": "1",
        "templates-INITIAL_FORMS": "0",
        "templates-MIN_NUM_FORMS": "0",
        "templates-MAX_NUM_FORMS": "1000",
        "templates-0-topic": Topic.BOOKED,
        "templates-0-template_id": "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
        "templates-0-data": '{"thing1": "{科室}", "time2": "{就诊时间}"}',
        **extra,
    }


def test_the_secret_is_stored_encrypted_and_never_shown_back(db) -> None:
    hospital = make_hospital()
    staff = console_client(make_staff(role=SYSTEM_ADMIN, hospitals=[hospital]))
    response = staff.post("/admin/wechat/officialaccount/add/", form(hospital))
    assert response.status_code == 302, response.content.decode()[:2000]
    official = OfficialAccount.objects.get()
    assert official.app_secret == SECRET
    with connection.cursor() as cursor:
        cursor.execute("SELECT app_secret FROM wechat_officialaccount")
        assert SECRET not in cursor.fetchone()[0]
    assert WechatTemplate.objects.get().data == {"thing1": "{科室}", "time2": "{就诊时间}"}
    page = staff.get(f"/admin/wechat/officialaccount/{official.pk}/change/").content.decode()
    assert SECRET not in page and "已设置" in page
    audit = AuditEntry.objects.filter(action=AuditEntry.Action.ADD).order_by("-id").first()
    assert SECRET not in str(audit.after)


def test_an_unknown_placeholder_or_field_name_is_refused(db) -> None:
    hospital = make_hospital()
    staff = console_client(make_staff(role=SYSTEM_ADMIN, hospitals=[hospital]))
    response = staff.post("/admin/wechat/officialaccount/add/", form(hospital, **{"templates-0-data": '{"thing1": "{科目}"}'}))
    assert response.status_code == 200 and "占位符 {科目} 不存在" in response.content.decode()
    response = staff.post("/admin/wechat/officialaccount/add/", form(hospital, app_id="not-an-appid"))
    assert response.status_code == 200 and "AppID 应为 wx 开头" in response.content.decode()
    assert not OfficialAccount.objects.exists()


def test_staff_see_only_their_hospitals_accounts_and_bindings(db) -> None:
    mine, theirs = make_hospital(), make_hospital()
    OfficialAccount.objects.create(hospital=mine, app_id="wx000000000000mine", app_secret="s")
    OfficialAccount.objects.create(hospital=theirs, app_id="wx00000000000theirs"[:18], app_secret="s")
    for app_id in ("wx000000000000mine", "wx00000000000their"):
        WechatBinding.objects.create(app_id=app_id, openid=f"o-{app_id}-0000000000", account=make_account(), bound_at=clock.now())
    staff = console_client(make_staff(role=SYSTEM_ADMIN, hospitals=[mine]))
    accounts = staff.get("/admin/wechat/officialaccount/").content.decode()
    assert "wx000000000000mine" in accounts and "wx00000000000their" not in accounts
    bindings = staff.get("/admin/wechat/wechatbinding/").content.decode()
    assert "wx000000000000mine" in bindings and "wx00000000000their" not in bindings
    assert "o-wx00****0000" in bindings  # openids are masked
