from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from hivemind_web.dashboard.views import board, nodes, tasks, teams

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", board.board, name="board"),
    path("board/snapshot.json", board.board_data, name="board-data"),
    path("board/charts.json", board.board_charts, name="board-charts"),
    path("fallback-mode/", board.fallback_mode, name="fallback-mode"),
    path("tasks/new/", tasks.task_new, name="task-new"),
    path("tasks/bulk/", tasks.tasks_bulk, name="tasks-bulk"),
    path("tasks/bulk/preview.json", tasks.tasks_bulk_preview, name="tasks-bulk-preview"),
    path("tasks/<uuid:session_id>/", tasks.task_detail, name="task"),
    path("tasks/<uuid:session_id>/live/", tasks.task_live, name="task-live"),
    path("tasks/<uuid:session_id>/cancel/", tasks.task_cancel, name="task-cancel"),
    path("tasks/<uuid:session_id>/fallback/", tasks.task_force_fallback, name="task-fallback"),
    path("tasks/<uuid:session_id>/retry/", tasks.task_retry, name="task-retry"),
    path("nodes/<str:name>/", nodes.node_detail, name="node"),
    path("nodes/<str:name>/live/", nodes.node_live, name="node-live"),
    path("nodes/<str:name>/cordon/", nodes.node_cordon, name="node-cordon"),
    path("nodes/<str:name>/uncordon/", nodes.node_uncordon, name="node-uncordon"),
    path("nodes/<str:name>/drain/", nodes.node_drain, name="node-drain"),
    path("teams/<str:name>/", teams.team_detail, name="team"),
    path("teams/<str:name>/live/", teams.team_live, name="team-live"),
]
