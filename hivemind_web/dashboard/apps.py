from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "hivemind_web.dashboard"
    label = "dashboard"
