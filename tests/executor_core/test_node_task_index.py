from __future__ import annotations

import random
import threading

import pytest

from executor_core import NodeTaskIndex


@pytest.fixture
def index() -> NodeTaskIndex:
    idx = NodeTaskIndex()
    idx.add("n1", "a", "red")
    idx.add("n1", "b", "red")
    idx.add("n2", "c", "red")
    idx.add("n2", "d", "blue")
    idx.add("n3", "e", None)
    return idx


def test_it_lists_the_tasks_on_a_node(index):
    assert index.get_tasks_on_node("n1") == ["a", "b"]
    assert index.get_tasks_on_node("n3") == ["e"]
    assert index.get_tasks_on_node("n9") == []


def test_it_lists_the_nodes_of_a_team_and_counts_its_tasks_there(index):
    assert index.get_nodes_by_team("red") == ["n1", "n2"]
    assert index.team_node_counts("red") == {"n1": 2, "n2": 1}
    assert index.get_nodes_by_team("green") == []
    assert index.team_node_counts(None) == {}
    assert index.get_nodes_by_team(None) == []


def test_it_removes_a_task_and_forgets_empty_nodes_and_teams(index):
    assert index.remove("c") == "n2"
    assert index.remove("d") == "n2"

    assert index.get_tasks_on_node("n2") == []
    assert index.get_nodes_by_team("red") == ["n1"]
    assert index.get_nodes_by_team("blue") == []
    assert len(index) == 3


def test_removing_an_unknown_session_is_ignored(index):
    assert index.remove("zzz") is None
    assert len(index) == 5


def test_adding_a_known_session_moves_it(index):
    index.add("n3", "a", "blue")

    assert index.node_of("a") == "n3"
    assert index.get_tasks_on_node("n1") == ["b"]
    assert index.team_node_counts("red") == {"n1": 1, "n2": 1}
    assert index.team_node_counts("blue") == {"n2": 1, "n3": 1}
    assert len(index) == 5


def test_team_counts_can_leave_out_the_task_being_placed(index):
    assert index.team_node_counts("red", exclude_session="c") == {"n1": 2}
    assert index.team_node_counts("red", exclude_session="a") == {"n1": 1, "n2": 1}
    assert index.team_node_counts("red", exclude_session="d") == {"n1": 2, "n2": 1}


@pytest.mark.parametrize(("node", "session"), [("", "s"), ("n", "")])
def test_it_refuses_empty_ids(node, session):
    with pytest.raises(ValueError):
        NodeTaskIndex().add(node, session, None)


def test_it_stays_consistent_under_many_threads():
    index = NodeTaskIndex()
    nodes = [f"n{i}" for i in range(5)]
    teams = ["red", "blue", None]
    threads, per_thread = 8, 600
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        rng = random.Random(t)
        barrier.wait()
        for i in range(per_thread):
            # Own sessions end in a known place; shared ones are fought over, then removed.
            index.add(nodes[i % 5], f"t{t}-{i}", teams[i % 3])
            shared = f"shared-{rng.randrange(50)}"
            if rng.random() < 0.6:
                index.add(rng.choice(nodes), shared, rng.choice(teams))
            else:
                index.remove(shared)
            index.get_nodes_by_team("red")
            index.team_node_counts("blue")
        for i in range(0, per_thread, 2):
            index.remove(f"t{t}-{i}")

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for s in range(50):
        index.remove(f"shared-{s}")

    expected = {
        f"t{t}-{i}": (nodes[i % 5], teams[i % 3])
        for t in range(threads)
        for i in range(1, per_thread, 2)
    }
    assert len(index) == len(expected)
    for node in nodes:
        on_node = {s for s, (n, _) in expected.items() if n == node}
        assert set(index.get_tasks_on_node(node)) == on_node
    for team in ("red", "blue"):
        counts: dict[str, int] = {}
        for node, t in expected.values():
            if t == team:
                counts[node] = counts.get(node, 0) + 1
        assert index.team_node_counts(team) == counts
        assert index.get_nodes_by_team(team) == sorted(counts)
    assert all(index.node_of(s) == n for s, (n, _) in expected.items())
