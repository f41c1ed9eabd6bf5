from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from hivemind_web.hub.api.metrics import Metrics
from hivemind_web.hub.api.views import healthz

handler400 = "hivemind_web.bad_requests.bad_request"
handler404 = "hivemind_web.bad_requests.not_found"
handler500 = "hivemind_web.bad_requests.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", Metrics.as_view(), name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("hivemind_web.hub.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("", include("hivemind_web.dashboard.urls")),
]
