from django.urls import include, path

from guahao.web import views, views_messages
from guahao.wechat import web as wechat

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("login", views.login, name="login"),
    path("login/code", views.send_code, name="send-code"),
    path("logout", views.logout, name="logout"),
    path("wechat/oauth/callback", wechat.oauth_callback, name="wechat-oauth-callback"),
    path("notices", views.notices, name="notices"),
    path("elder", views.toggle_elder, name="elder"),
    path("departments", views.departments, name="departments"),
    path("departments/<int:department_id>", views.department, name="department"),
    path("doctors/<int:doctor_id>", views.doctor, name="doctor"),
    path("search", views.search, name="search"),
    path("me/messages", views_messages.messages, name="messages"),
    path("me/messages/read-all", views_messages.read_all, name="messages-read-all"),
    path("me/messages/<int:message_id>/open", views_messages.open_message, name="message-open"),
    path("", include("guahao.web.booking_urls")),
]
