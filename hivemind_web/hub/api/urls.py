from __future__ import annotations

from django.urls import path

from hivemind_web.hub.api import views

urlpatterns = [
    path("tasks/", views.TaskListCreate.as_view(), name="api-tasks"),
    path("tasks/batch/", views.TaskBatch.as_view(), name="api-task-batch"),
    path("tasks/<str:session_id>/", views.TaskDetail.as_view(), name="api-task"),
    path("tasks/<str:session_id>/events/", views.TaskEvents.as_view(), name="api-task-events"),
    path(
        "tasks/<str:session_id>/attempts/", views.TaskAttempts.as_view(), name="api-task-attempts"
    ),
    path("tasks/<str:session_id>/cancel/", views.TaskCancel.as_view(), name="api-task-cancel"),
    path("tasks/<str:session_id>/retry/", views.TaskRetry.as_view(), name="api-task-retry"),
    path(
        "tasks/<str:session_id>/fallback/", views.TaskFallback.as_view(), name="api-task-fallback"
    ),
    path("nodes/", views.NodeList.as_view(), name="api-nodes"),
    path("nodes/register/", views.NodeRegister.as_view(), name="api-node-register"),
    path("nodes/<str:name>/", views.NodeDetail.as_view(), name="api-node"),
    path("nodes/<str:name>/cordon/", views.NodeCordon.as_view(), name="api-node-cordon"),
    path("nodes/<str:name>/uncordon/", views.NodeUncordon.as_view(), name="api-node-uncordon"),
    path("nodes/<str:name>/drain/", views.NodeDrain.as_view(), name="api-node-drain"),
    path("nodes/<str:name>/tasks/", views.NodeTasks.as_view(), name="api-node-tasks"),
    path("nodes/<str:name>/events/", views.NodeEvents.as_view(), name="api-node-events"),
    path("teams/", views.TeamListCreate.as_view(), name="api-teams"),
    path("teams/<str:name>/", views.TeamDetail.as_view(), name="api-team"),
    path("teams/<str:name>/nodes/", views.TeamNodes.as_view(), name="api-team-nodes"),
    path("fallback-mode/", views.FallbackMode.as_view(), name="api-fallback-mode"),
]
