"""REST API v1: a small input serializer, one service call, an output serializer."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hivemind_web.hub import selectors
from hivemind_web.hub.api import permissions as perms
from hivemind_web.hub.api.serializers import (
    FallbackModeSerializer,
    NodeEventSerializer,
    NodeRegisterSerializer,
    NodeSerializer,
    NodeUpdateSerializer,
    TaskAttemptSerializer,
    TaskBatchSerializer,
    TaskDetailSerializer,
    TaskEventSerializer,
    TaskSerializer,
    TaskSubmitSerializer,
    TeamSerializer,
    TeamUpdateSerializer,
)
from hivemind_web.hub.api.throttles import RegisterThrottle
from hivemind_web.hub.models import Node, Team
from hivemind_web.hub.services import hub as hub_services
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import retries, submission
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services import teams as team_services
from hivemind_web.hub.services.errors import NotFound


def healthz(request: Any) -> JsonResponse:
    """Liveness for load balancers: no auth, no data."""
    return JsonResponse({"status": "ok"})


class TaskListCreate(generics.ListAPIView):
    serializer_class = TaskSerializer
    permission_classes = [perms.requires(write=perms.SUBMIT)]

    def get_queryset(self):  # type: ignore[no-untyped-def]
        params = self.request.query_params
        errors = {}
        try:
            statuses = selectors.parse_statuses(params.get("status"))
        except ValueError as exc:
            errors["status"] = [str(exc)]
        try:
            route = selectors.parse_route(params.get("route"))
        except ValueError as exc:
            errors["route"] = [str(exc)]
        if errors:
            raise ValidationError(errors)
        return selectors.task_list(
            statuses=statuses,
            team=params.get("team"),
            node=params.get("node"),
            route=route,
            search=params.get("q"),
        )

    @extend_schema(request=TaskSubmitSerializer, responses={201: TaskDetailSerializer})
    def post(self, request: Request) -> Response:
        data = TaskSubmitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        task = submission.task_submit(actor=request.user, **data.validated_data)
        return Response(TaskDetailSerializer(task).data, status=status.HTTP_201_CREATED)


class TaskBatch(APIView):
    """Submit up to 500 tasks in one request: all or none (errors keyed by item index)."""

    permission_classes = [perms.requires(write=perms.SUBMIT)]

    @extend_schema(request=TaskBatchSerializer, responses={201: TaskSerializer(many=True)})
    def post(self, request: Request) -> Response:
        batch = TaskBatchSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        items, errors = [], {}
        for i, raw in enumerate(batch.validated_data["tasks"]):
            item = TaskSubmitSerializer(data=raw)
            if item.is_valid():
                items.append(item.validated_data)
            else:
                errors[str(i)] = item.errors
        if errors:
            raise ValidationError({"tasks": errors})
        tasks = submission.task_submit_many(actor=request.user, items=items)
        return Response(TaskSerializer(tasks, many=True).data, status=status.HTTP_201_CREATED)


class TaskDetail(APIView):
    @extend_schema(responses=TaskDetailSerializer)
    def get(self, request: Request, session_id: str) -> Response:
        return Response(TaskDetailSerializer(task_services.get_task(session_id)).data)


class TaskEvents(generics.ListAPIView):
    serializer_class = TaskEventSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return task_services.get_task(self.kwargs["session_id"]).events.all()


class TaskAttempts(generics.ListAPIView):
    """Each attempt of the task: where it went and why, when it ran, how it ended."""

    serializer_class = TaskAttemptSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return task_services.get_task(self.kwargs["session_id"]).attempt_rows.all()


class TaskCancel(APIView):
    permission_classes = [perms.requires(write=perms.CONTROL)]

    @extend_schema(request=None, responses=TaskDetailSerializer)
    def post(self, request: Request, session_id: str) -> Response:
        task = task_services.task_cancel(session_id=session_id, actor=request.user)
        return Response(TaskDetailSerializer(task).data)


class TaskFallback(APIView):
    permission_classes = [perms.requires(write=perms.CONTROL)]

    @extend_schema(request=None, responses=TaskDetailSerializer)
    def post(self, request: Request, session_id: str) -> Response:
        task = task_services.task_force_fallback(session_id=session_id, actor=request.user)
        return Response(TaskDetailSerializer(task).data)


class TaskRetry(APIView):
    """A new task with the same fields as this failed or cancelled one, linked to it."""

    permission_classes = [perms.requires(write=perms.SUBMIT)]

    @extend_schema(request=None, responses={201: TaskDetailSerializer})
    def post(self, request: Request, session_id: str) -> Response:
        task = retries.task_retry(session_id=session_id, actor=request.user)
        return Response(TaskDetailSerializer(task).data, status=status.HTTP_201_CREATED)


class NodeList(generics.ListAPIView):
    serializer_class = NodeSerializer
    queryset = Node.objects.all()


class NodeDetail(APIView):
    permission_classes = [perms.requires(write=perms.MANAGE_NODES)]

    @extend_schema(responses=NodeSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(NodeSerializer(node_services.get_node(name)).data)

    @extend_schema(request=NodeUpdateSerializer, responses=NodeSerializer)
    def patch(self, request: Request, name: str) -> Response:
        data = NodeUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        node = node_services.node_update(name=name, actor=request.user, **data.validated_data)
        return Response(NodeSerializer(node).data)


def _node_action(action: Any) -> type[APIView]:
    class NodeAction(APIView):
        permission_classes = [perms.requires(write=perms.MANAGE_NODES)]

        @extend_schema(request=None, responses=NodeSerializer)
        def post(self, request: Request, name: str) -> Response:
            return Response(NodeSerializer(action(name=name, actor=request.user)).data)

    NodeAction.__name__ = f"Node_{action.__name__}"
    return NodeAction


NodeCordon = _node_action(node_services.node_cordon)
NodeUncordon = _node_action(node_services.node_uncordon)
NodeDrain = _node_action(node_services.node_drain)


class NodeTasks(generics.ListAPIView):
    """The task→node index: tasks scheduled or running on the node."""

    serializer_class = TaskSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        node_services.get_node(self.kwargs["name"])
        return selectors.tasks_on_node(self.kwargs["name"])


class NodeEvents(generics.ListAPIView):
    """The node's audit trail: registrations, connections, cordons, drains, edits."""

    serializer_class = NodeEventSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return node_services.get_node(self.kwargs["name"]).events.all()


class NodeRegister(APIView):
    """A node agent trades the hub's join token for its own node token (shown once)."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes = [RegisterThrottle]
    throttle_scope = "register"

    @extend_schema(request=NodeRegisterSerializer, responses={201: dict})
    def post(self, request: Request) -> Response:
        data = NodeRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            node, token = node_services.node_register(**data.validated_data)
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from None
        return Response({"name": node.name, "token": token}, status=status.HTTP_201_CREATED)


class TeamListCreate(generics.ListAPIView):
    serializer_class = TeamSerializer
    queryset = Team.objects.all()
    permission_classes = [perms.requires(write=perms.ADD_TEAM)]

    @extend_schema(request=TeamSerializer, responses={201: TeamSerializer})
    def post(self, request: Request) -> Response:
        data = TeamSerializer(data=request.data)
        # The unique-name check is the service's: skip the serializer's own validators.
        data.fields["name"].validators = []
        data.is_valid(raise_exception=True)
        team = team_services.team_create(**data.validated_data)
        return Response(TeamSerializer(team).data, status=status.HTTP_201_CREATED)


class TeamDetail(APIView):
    permission_classes = [perms.requires(write=perms.CHANGE_TEAM)]

    @extend_schema(responses=TeamSerializer)
    def get(self, request: Request, name: str) -> Response:
        team = selectors.team_by_name(name)
        if team is None:
            raise NotFound(f"no team named {name!r}")
        return Response(TeamSerializer(team).data)

    @extend_schema(request=TeamUpdateSerializer, responses=TeamSerializer)
    def patch(self, request: Request, name: str) -> Response:
        data = TeamUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = team_services.team_update(name=name, **data.validated_data)
        return Response(TeamSerializer(team).data)


class TeamNodes(APIView):
    """Nodes hosting the team's active members (get_nodes_by_team), with counts."""

    @extend_schema(responses=dict)
    def get(self, request: Request, name: str) -> Response:
        if selectors.team_by_name(name) is None:
            raise NotFound(f"no team named {name!r}")
        counts = selectors.team_nodes(name)
        return Response({"team": name, "nodes": sorted(counts), "counts": counts})


class FallbackMode(APIView):
    permission_classes = [perms.requires(write=perms.SWITCH_FALLBACK)]

    @extend_schema(responses=FallbackModeSerializer)
    def get(self, request: Request) -> Response:
        setting = hub_services.hub_settings()
        return Response(self._body(setting))

    @extend_schema(request=FallbackModeSerializer, responses=FallbackModeSerializer)
    def put(self, request: Request) -> Response:
        data = FallbackModeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        setting = hub_services.fallback_mode_set(
            enabled=data.validated_data["enabled"], actor=request.user
        )
        return Response(self._body(setting))

    @staticmethod
    def _body(setting: Any) -> dict[str, Any]:
        return {
            "enabled": setting.fallback_mode,
            "changed_by": setting.changed_by,
            "changed_at": setting.changed_at,
        }
