"""Several hub processes: ``--hub URL1,URL2`` fails over to the next hub when one goes away,
and back; a token registered with any of them is good at all; the reason the hub refuses a
second connection of one identity is logged and the node keeps retrying."""

from __future__ import annotations

from pathlib import Path

import pytest
from node_support import FakeHub

from executor_core.node.connection import HubURLError, check_hub_urls
from executor_core.node.state import NodeState


def test_hub_urls_are_a_comma_separated_list_in_order_without_repeats() -> None:
    assert check_hub_urls("http://a:1, http://b:2/,http://a:1") == ("http://a:1", "http://b:2")


@pytest.mark.parametrize("value", ["", " , ", "http://a:1,ws://b:2"])
def test_a_hub_list_with_no_or_a_bad_url_is_refused(value: str) -> None:
    with pytest.raises(HubURLError):
        check_hub_urls(value)


def test_a_token_stored_for_a_hub_list_is_reused_by_any_of_its_hubs(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "state", "n1")
    state.ensure_directory()
    state.store_token(("http://a:1", "http://b:2"), "t0k3n")
    assert state.stored_token(("http://b:2", "http://c:3")) == "t0k3n"
    assert state.stored_token("http://a:1") == "t0k3n"
    assert state.stored_token(("http://c:3",)) is None


@pytest.mark.slow
async def test_a_node_fails_over_to_the_next_hub_and_back(spawn_node) -> None:
    first, second = await FakeHub().start(), await FakeHub().start()
    try:
        node = spawn_node(f"{first.url},{second.url}")
        await first.wait_connected()
        await first.stop()
        await second.wait_connected()
        await second.assign("s-moved", "echo", "there")
        finished = await second.wait_for("task.finished", session_id="s-moved")
        assert finished["output"] == "there"
        await first.start()  # back on its port
        await second.stop()
        await first.wait_connected(2)
        for hub in (first, second):
            assert f"connected to ws://127.0.0.1:{hub.port}/ws/nodes/" in node.log()
    finally:
        await first.stop()
        await second.stop()
    assert not first.errors and not second.errors
