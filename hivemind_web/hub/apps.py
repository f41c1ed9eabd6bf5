from django.apps import AppConfig


class HubConfig(AppConfig):
    name = "hivemind_web.hub"
    label = "hub"
    verbose_name = "Hivemind hub"
