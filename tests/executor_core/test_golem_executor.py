"""GolemExecutor: the five-step flow and its failure semantics.

The scheduler and dispatcher are fakes standing for the hub's (database bind, websocket hand-off).
"""

from __future__ import annotations

import pytest

from executor_core import (
    DispatchError,
    ExecuteRequest,
    ExecutionResult,
    GolemExecutor,
    LocalExecutor,
    NodeAffinityPolicy,
    NodeTaskIndex,
    RecordingObserver,
    TaskStatus,
    build_schedule_request,
    default_registry,
)
from executor_core.scheduling.types import Placement, ScheduleRequest, SchedulingError

NO_NODE = "0/3 nodes are available: 3 node(s) didn't match the node selector"


class FakeScheduler:
    def __init__(self, placement: Placement | None = None, error: str | None = None) -> None:
        self.placement = placement or Placement("n2", 80.0, "least loaded")
        self.error = error
        self.waitable = False
        self.requests: list[ScheduleRequest] = []
        self.released: list[str] = []

    async def schedule(self, request: ScheduleRequest) -> Placement:
        self.requests.append(request)
        if self.error:
            raise SchedulingError(self.error, waitable=self.waitable)
        return self.placement

    def release(self, session_id: str) -> None:
        self.released.append(session_id)


class FakeWaitQueue:
    """Parks what it may (``waitable`` failures), else lets the executor fall back."""

    def __init__(self) -> None:
        self.parked: list[tuple[str, str]] = []

    async def park(self, request: ExecuteRequest, error: SchedulingError):
        if not error.waitable:
            return None
        self.parked.append((request.session_id, error.reason))
        return ExecutionResult(request.session_id, TaskStatus.PENDING, "golem")


class EstimatingScheduler(FakeScheduler):
    def __init__(self, estimate: object) -> None:
        super().__init__()
        self.value = estimate

    async def estimate(self, request: ScheduleRequest) -> float | None:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


class SyncEstimatingScheduler(FakeScheduler):
    def estimate(self, request: ScheduleRequest) -> float | None:
        return 0.4


class FakeDispatcher:
    def __init__(self, status: TaskStatus = TaskStatus.RUNNING, raises: Exception | None = None):
        self.status = status
        self.raises = raises
        self.calls: list[tuple[Placement, ExecuteRequest]] = []

    async def dispatch(self, placement: Placement, request: ExecuteRequest) -> ExecutionResult:
        self.calls.append((placement, request))
        if self.raises is not None:
            raise self.raises
        error = "agent crashed" if self.status is TaskStatus.FAILED else ""
        return ExecutionResult(request.session_id, self.status, "golem", error=error)


class Hook:
    def __init__(self) -> None:
        self.calls: list[tuple[ExecuteRequest, ExecutionResult]] = []

    def __call__(self, request: ExecuteRequest, result: ExecutionResult) -> None:
        self.calls.append((request, result))


class AsyncHook(Hook):
    async def __call__(self, request: ExecuteRequest, result: ExecutionResult) -> None:
        self.calls.append((request, result))


def golem_request(session_id: str = "s1", **fields: object) -> ExecuteRequest:
    defaults = {"agent_id": "echo", "input": "hi", "strategy": "golem"}
    return ExecuteRequest(session_id=session_id, **{**defaults, **fields})


def make(
    scheduler: FakeScheduler | None = None,
    dispatcher: FakeDispatcher | None = None,
    hook: Hook | None = None,
) -> tuple[GolemExecutor, RecordingObserver, LocalExecutor]:
    observer = RecordingObserver()
    local = LocalExecutor(default_registry(entry_points=False), observer=observer)
    executor = GolemExecutor(
        scheduler or FakeScheduler(),
        local,
        observer,
        index=NodeTaskIndex(),
        dispatcher=dispatcher,
        on_execution_failure=hook,
    )
    return executor, observer, local


async def test_it_schedules_records_and_dispatches_in_five_steps():
    scheduler, dispatcher = FakeScheduler(), FakeDispatcher()
    executor, observer, _ = make(scheduler, dispatcher)
    executor.index.add("n1", "mate-1", "red")
    executor.index.add("n1", "mate-2", "red")
    executor.index.add("n2", "mate-3", "red")
    executor.index.add("n3", "stranger", "blue")
    request = golem_request(
        team_id="red", affinity_policy="prefer_colocate", node_selector={"gpu": "true"}
    )

    result = await executor.execute(request)

    # 1-2: the schedule request carries the selector and the affinity hints.
    [sent] = scheduler.requests
    assert (sent.session_id, sent.agent_id, sent.team_id) == ("s1", "echo", "red")
    assert sent.node_selector == {"gpu": "true"}
    assert sent.hints.affinity is NodeAffinityPolicy.PREFER_COLOCATE
    assert sent.hints.team_nodes == {"n1": 2, "n2": 1}
    # 3-4: placed, and the index knows where the task runs.
    assert executor.index.node_of("s1") == "n2"
    assert executor.index.team_node_counts("red") == {"n1": 2, "n2": 2}
    # 5: handed to the node through the dispatcher.
    assert dispatcher.calls == [(scheduler.placement, request)]
    assert (result.status, result.node, result.executor) == (TaskStatus.RUNNING, "n2", "golem")
    assert result.fallback_reason == ""
    assert observer.names() == ["schedule", "started"]
    assert observer.of("started")[0]["executor"] == "golem"
    assert scheduler.released == []


async def test_without_a_dispatcher_the_result_is_scheduled_on_the_node():
    executor, _, _ = make(FakeScheduler(Placement("n7", 55.0, "spread")))

    result = await executor.execute(golem_request())

    assert (result.status, result.node) == (TaskStatus.SCHEDULED, "n7")
    assert result.details == {"score": 55.0, "reason": "spread"}
    assert executor.index.node_of("s1") == "n7"


async def test_a_scheduling_failure_falls_back_to_local_with_the_reason():
    scheduler = FakeScheduler(error=NO_NODE)
    dispatcher = FakeDispatcher()
    executor, observer, _ = make(scheduler, dispatcher)

    result = await executor.execute(golem_request(input="ping"))

    reason = f"scheduling failed: {NO_NODE}"
    assert (result.status, result.output, result.executor) == (
        TaskStatus.SUCCEEDED,
        "ping",
        "local",
    )
    assert result.fallback_reason == reason
    assert observer.of("fallback")[0]["reason"] == reason
    assert observer.names() == ["fallback", "started", "progress", "finished"]
    assert dispatcher.calls == []
    assert "s1" not in executor.index
    assert scheduler.released == ["s1"]


@pytest.mark.parametrize("waitable", [True, False])
async def test_a_wait_queue_parks_what_waiting_can_help_and_the_rest_falls_back(waitable):
    scheduler = FakeScheduler(error="0/2 nodes available: 2 at capacity")
    scheduler.waitable = waitable
    queue = FakeWaitQueue()
    local = LocalExecutor(default_registry(entry_points=False))
    executor = GolemExecutor(scheduler, local, wait_queue=queue, dispatcher=FakeDispatcher())

    result = await executor.execute(golem_request(input="ping"))

    if waitable:
        assert (result.status, result.executor) == (TaskStatus.PENDING, "golem")
        assert queue.parked == [("s1", "0/2 nodes available: 2 at capacity")]
    else:
        assert (result.status, result.executor) == (TaskStatus.SUCCEEDED, "local")
        assert queue.parked == []


async def test_hand_over_dispatches_a_placement_decided_elsewhere():
    dispatcher = FakeDispatcher()
    executor, _, _ = make(dispatcher=dispatcher)
    placement = Placement("n9", 70.0, "from the wait queue")

    result = await executor.hand_over(golem_request(), placement)

    assert (result.status, result.node) == (TaskStatus.RUNNING, "n9")
    assert dispatcher.calls[0][0] == placement


def test_build_schedule_request_carries_the_placement_constraints():
    request = golem_request(
        node="gpu-1",
        prefer_labels={"zone": "eu"},
        capabilities=["browser"],
        min_free_memory_mb=512,
        max_cpu_percent=80,
        model="llama3:8b",
    )
    sent = build_schedule_request(request)
    assert (sent.node, sent.prefer_labels, sent.capabilities) == (
        "gpu-1",
        {"zone": "eu"},
        frozenset({"browser"}),
    )
    assert (sent.min_free_memory_mb, sent.max_cpu_percent, sent.model) == (512, 80.0, "llama3:8b")


async def test_a_node_that_does_not_accept_falls_back_to_local():
    scheduler = FakeScheduler(Placement("n4", 90.0, "least loaded"))
    dispatcher = FakeDispatcher(raises=DispatchError("no acceptance within 10s"))
    executor, observer, _ = make(scheduler, dispatcher)

    result = await executor.execute(golem_request())

    reason = "node n4 did not accept the task: no acceptance within 10s"
    assert (result.status, result.executor, result.fallback_reason) == (
        TaskStatus.SUCCEEDED,
        "local",
        reason,
    )
    assert observer.names()[:2] == ["schedule", "fallback"]
    assert "s1" not in executor.index
    assert scheduler.released == ["s1"]


@pytest.mark.parametrize("hook_class", [Hook, AsyncHook])
async def test_an_execution_failure_goes_to_the_hook_without_fallback(hook_class):
    hook = hook_class()
    scheduler = FakeScheduler()
    executor, observer, _ = make(scheduler, FakeDispatcher(TaskStatus.FAILED), hook)

    result = await executor.execute(golem_request())

    assert (result.status, result.node, result.error) == (TaskStatus.FAILED, "n2", "agent crashed")
    assert result.fallback_reason == ""
    assert hook.calls == [(golem_request(), result)]
    assert "fallback" not in observer.names()
    assert observer.of("finished") == [{"result": result}]
    assert "s1" not in executor.index
    assert scheduler.released == ["s1"]


async def test_a_successful_remote_result_clears_the_index_without_the_hook():
    hook = Hook()
    executor, _, _ = make(dispatcher=FakeDispatcher(TaskStatus.SUCCEEDED), hook=hook)

    result = await executor.execute(golem_request())

    assert result.status is TaskStatus.SUCCEEDED
    assert hook.calls == []
    assert len(executor.index) == 0


async def test_a_late_result_updates_the_index_and_calls_the_hook_on_failure():
    hook = Hook()
    executor, observer, _ = make(dispatcher=FakeDispatcher(), hook=hook)
    request = golem_request(team_id="red")
    await executor.execute(request)

    await executor.report_result(request, ExecutionResult("s1", TaskStatus.RUNNING, "golem"))
    assert executor.index.node_of("s1") == "n2"

    failed = ExecutionResult("s1", TaskStatus.FAILED, "golem", error="node lost", node="n2")
    await executor.report_result(request, failed)

    assert "s1" not in executor.index
    assert executor.index.get_nodes_by_team("red") == []
    assert hook.calls == [(request, failed)]
    assert observer.of("finished") == [{"result": failed}]


async def test_a_failing_hook_is_logged_and_the_result_still_returned(caplog):
    def hook(request, result):
        raise RuntimeError("orchestrator down")

    executor = GolemExecutor(
        FakeScheduler(),
        LocalExecutor(default_registry(entry_points=False)),
        dispatcher=FakeDispatcher(TaskStatus.FAILED),
        on_execution_failure=hook,
    )

    result = await executor.execute(golem_request())

    assert result.status is TaskStatus.FAILED
    assert "orchestrator down" in caplog.text


async def test_an_unexpected_dispatch_error_undoes_the_placement_and_propagates():
    scheduler = FakeScheduler()
    executor, observer, _ = make(scheduler, FakeDispatcher(raises=RuntimeError("bug")))

    with pytest.raises(RuntimeError, match="bug"):
        await executor.execute(golem_request())

    assert "s1" not in executor.index
    assert scheduler.released == ["s1"]
    assert "fallback" not in observer.names()


async def test_a_scheduler_without_release_is_fine():
    class Bare:
        async def schedule(self, request):
            raise SchedulingError("no nodes")

    executor = GolemExecutor(Bare(), LocalExecutor(default_registry(entry_points=False)))

    result = await executor.execute(golem_request())

    assert result.fallback_reason == "scheduling failed: no nodes"


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        (FakeScheduler(), None),
        (EstimatingScheduler(None), None),
        (EstimatingScheduler(0.25), 0.25),
        (EstimatingScheduler(SchedulingError("no nodes")), None),
        (SyncEstimatingScheduler(), 0.4),
    ],
    ids=["no-estimate", "no-feasible-node", "async-estimate", "estimate-raises", "sync-estimate"],
)
async def test_best_node_load_asks_the_scheduler_for_an_estimate(scheduler, expected):
    executor, _, _ = make(scheduler)

    assert await executor.best_node_load(golem_request()) == expected


def test_build_schedule_request_leaves_out_the_request_own_session():
    index = NodeTaskIndex()
    index.add("n1", "s1", "red")
    index.add("n1", "s2", "red")
    index.add("n2", "s3", "red")

    sent = build_schedule_request(
        golem_request(team_id="red", affinity_policy="require_spread"), index
    )

    assert sent.hints.team_nodes == {"n1": 1, "n2": 1}
    assert sent.hints.affinity is NodeAffinityPolicy.REQUIRE_SPREAD


@pytest.mark.parametrize("index", [None, NodeTaskIndex()])
def test_build_schedule_request_without_a_team_has_no_team_nodes(index):
    sent = build_schedule_request(golem_request(), index)

    assert sent.team_id is None
    assert sent.hints.team_nodes == {}
    assert sent.hints.affinity is NodeAffinityPolicy.NONE
