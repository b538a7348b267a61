from django.urls import include, path

from guahao.web import views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("login", views.login, name="login"),
    path("login/code", views.send_code, name="send-code"),
    path("logout", views.logout, name="logout"),
    path("notices", views.notices, name="notices"),
    path("elder", views.toggle_elder, name="elder"),
    path("departments", views.departments, name="departments"),
    path("departments/<int:department_id>", views.department, name="department"),
    path("doctors/<int:doctor_id>", views.doctor, name="doctor"),
    path("search", views.search, name="search"),
    path("", include("guahao.web.booking_urls")),
]
