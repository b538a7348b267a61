"""网页授权 in the patient H5: a patient inside WeChat is sent through WeChat's authorize page once,
the openid is bound after the next SMS sign-in, and later visits sign in by openid alone."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.test import Client

from guahao.patients.models import Account, AuthToken
from guahao.patients.selectors import token_for_key
from guahao.testing import make_account, make_hospital
from guahao.web.auth import SESSION_KEY
from guahao.wechat import services
from guahao.wechat.client import WechatApiError
from guahao.wechat.models import WechatBinding
from guahao.wechat.web import CALLBACK_PATH, OPENID_KEY

WECHAT_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 MicroMessenger/8.0.50(0x1800322c) NetType/WIFI Language/zh_CN"
OPENID = "oPatient-In-WeChat-00000000001"


@pytest.fixture
def official(db, sim):
    hospital = make_hospital()
    return sim.official_account(hospital)


def in_wechat() -> Client:
    return Client(HTTP_USER_AGENT=WECHAT_UA)


def through_wechat(client: Client, sim, *, path: str = "/search", openid: str = OPENID):
    """Open `path` inside WeChat, tap 允许 on WeChat's page, and follow WeChat back to us."""
    response = client.get(path)
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(f"{sim.url}/connect/oauth2/authorize?") and location.endswith("#wechat_redirect")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location.removesuffix("#wechat_redirect")).query).items()}
    assert query["appid"] == sim.app_id and query["scope"] == "snsapi_base" and query["response_type"] == "code"
    assert query["redirect_uri"].endswith(CALLBACK_PATH) and query["state"].isalnum() and len(query["state"]) <= 128
    page = httpx.get(location.removesuffix("#wechat_redirect"))
    assert page.status_code == 200 and "模拟微信授权" in page.text and "允许" in page.text
    allowed = httpx.get(
        f"{sim.url}/connect/oauth2/authorize/allow",
        params={"appid": query["appid"], "redirect_uri": query["redirect_uri"], "state": query["state"], "openid": openid, "follow": "1"},
    )
    assert allowed.status_code == 302
    back = urlsplit(allowed.headers["location"])
    return client.get(f"{back.path}?{back.query}"), f"{back.path}?{back.query}"


def signed_in_as(client: Client) -> Account | None:
    token = token_for_key(client.session.get(SESSION_KEY, ""))
    return token.account if token else None


def sign_in_by_sms(client: Client, outbox, phone: str):
    client.post("/login/code", {"phone": phone})
    return client.post("/login", {"phone": phone, "code": outbox.last_code(phone), "next": "/search"})


def test_pages_outside_wechat_are_not_redirected(client: Client, official) -> None:
    assert client.get("/search").status_code == 200


def test_a_hospital_without_an_official_account_is_not_redirected(db, sim) -> None:
    make_hospital()
    assert in_wechat().get("/search").status_code == 200


def test_first_visit_binds_after_sms_sign_in_and_the_next_visit_signs_in_silently(official, sim, sms_outbox) -> None:
    client = in_wechat()
    response, _ = through_wechat(client, sim)
    assert response.status_code == 302 and response["Location"] == "/search"
    assert client.session[OPENID_KEY] == {"app_id": sim.app_id, "openid": OPENID}
    assert SESSION_KEY not in client.session  # nobody bound yet: the patient signs in by SMS
    assert client.get("/search").status_code == 200  # asked once per browser session, not again

    phone = "13912340001"
    assert sign_in_by_sms(client, sms_outbox, phone).status_code == 302
    account = Account.objects.get()
    assert WechatBinding.objects.get().account == account

    # Another day, a new browser session inside WeChat: signed in without SMS.
    later = in_wechat()
    response, _ = through_wechat(later, sim)
    assert response.status_code == 302
    assert signed_in_as(later) == account
    assert AuthToken.objects.filter(account=account).count() == 2  # one device per sign-in
    assert "退出登录" in later.get("/").content.decode()


def test_signing_out_inside_wechat_does_not_sign_straight_back_in(official, sim) -> None:
    account = make_account("13912340002")
    services.bind_openid(account_id=account.id, app_id=sim.app_id, openid=OPENID)
    client = in_wechat()
    through_wechat(client, sim)
    assert signed_in_as(client) == account
    client.post("/logout")
    response = client.get("/search")
    assert response.status_code == 200 and SESSION_KEY not in client.session


def test_a_forged_state_is_refused(official, sim) -> None:
    client = in_wechat()
    client.get("/search")  # sent to WeChat with a real state
    code = sim.code_for(OPENID)
    response = client.get(CALLBACK_PATH, {"code": code, "state": "0" * 32})
    assert response.status_code == 403 and "微信授权已失效" in response.content.decode()
    assert OPENID_KEY not in client.session


def test_a_replayed_callback_is_refused(official, sim) -> None:
    account = make_account("13912340003")
    services.bind_openid(account_id=account.id, app_id=sim.app_id, openid=OPENID)
    first = in_wechat()
    _, callback = through_wechat(first, sim)
    # The same callback URL again, in the same session or in a stranger's: the state is used up.
    assert first.get(callback).status_code == 403
    stranger = in_wechat()
    stranger.get("/search")
    assert stranger.get(callback).status_code == 403
    assert SESSION_KEY not in stranger.session


def test_a_code_works_once(official, sim) -> None:
    from guahao.wechat.tokens import client_for

    code = sim.code_for(OPENID)
    assert client_for(official).exchange_code(code) == OPENID
    with pytest.raises(WechatApiError) as refused:
        client_for(official).exchange_code(code)
    assert refused.value.errcode == 40163
    with pytest.raises(WechatApiError) as unknown:
        client_for(official).exchange_code("not-a-code")
    assert unknown.value.errcode == 40029


def test_an_openid_bound_to_one_account_is_never_taken_by_another(official, sim, sms_outbox) -> None:
    owner = make_account("13912340004")
    services.bind_openid(account_id=owner.id, app_id=sim.app_id, openid=OPENID)
    client = in_wechat()
    sign_in_by_sms(client, sms_outbox, "13912340005")  # another account, signed in first
    other = Account.objects.exclude(pk=owner.pk).get()
    response, _ = through_wechat(client, sim)
    assert response.status_code == 302
    assert list(WechatBinding.objects.values_list("account_id", flat=True)) == [owner.id]
    assert signed_in_as(client) == other  # still the account that signed in by SMS
    assert not AuthToken.objects.filter(account=owner).exists()


def test_an_account_keeps_its_first_openid(official, sim) -> None:
    account = make_account("13912340006")
    assert services.bind_openid(account_id=account.id, app_id=sim.app_id, openid=OPENID) is services.BindOutcome.BOUND
    assert services.bind_openid(account_id=account.id, app_id=sim.app_id, openid=OPENID) is services.BindOutcome.ALREADY
    second = services.bind_openid(account_id=account.id, app_id=sim.app_id, openid="oAnother-WeChat-User-000000001")
    assert second is services.BindOutcome.ACCOUNT_HAS_OTHER
    assert WechatBinding.objects.get().openid == OPENID
