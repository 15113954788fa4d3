"""The shipped multi-pattern workflow (data/workflow) end to end through replay."""

from __future__ import annotations

from typing import Any

from srvthreds_engine.apps.config_files import read_resolver_config, read_sessions_model
from tests.srvthreds_engine.driver import DATA, Driver, only_thred, recipients, titles


def workflow() -> Driver:
    return Driver(
        "workflow",
        sessions_model=read_sessions_model(DATA / "workflow_sessions.json"),
        resolver_config=read_resolver_config(DATA / "workflow_resolver.json"),
    )


def request(event_id: str = "r1", *, source: str = "alice", amount: int = 1200) -> dict[str, Any]:
    values = {"item": "laptop", "amount": amount}
    return {
        "id": event_id,
        "type": "org.example.purchase.request",
        "source": {"id": source},
        "data": {"content": {"values": values}},
    }


def answer(
    event_id: str, *, re: str, thred_id: str, source: str = "carol", **values: Any
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "org.wt.client.tell",
        "re": re,
        "thredId": thred_id,
        "source": {"id": source},
        "data": {"content": {"values": values}},
    }


async def asked(driver: Driver) -> tuple[str, str]:
    output = await driver.send(request())
    assert titles(output) == ["Approve laptop for 1200?"]
    assert recipients(output) == [{"carol", "dave"}]
    thred = only_thred(output)
    scope = thred["thredContext"]["scope"]
    ask_id = output["messages"][0]["event"]["id"]
    assert scope["out_id_ask"] == ask_id
    assert scope["askedAt"] == 1767225600000
    return str(thred["id"]), str(ask_id)


async def test_only_requesters_and_robots_may_start_a_request() -> None:
    driver = workflow()
    assert (await driver.send(request(source="mallory")))["messages"] == []
    assert titles(await driver.send(request("r2", source="robot-7"))) == [
        "Approve laptop for 1200?"
    ]
    assert (await driver.send(request("r3", amount=0)))["messages"] == []


async def test_approval_spawns_an_order_and_delivery_closes_the_request() -> None:
    driver = workflow()
    t, ask_id = await asked(driver)
    output = await driver.send(answer("a1", re=ask_id, thred_id=t, approved=True))
    assert titles(output) == ["Action by carol", "Purchase approved", "Order for laptop"]
    echo, approved, order = output["messages"]
    assert set(echo["to"]) == {"dave", "alice"}
    assert set(approved["to"]) == {"carol", "dave", "alice", "org.example.purchasing"}
    assert approved["event"]["data"]["content"]["values"] == {
        "item": "laptop",
        "approvedBy": "carol",
    }
    assert order["to"] == ["org.example.supplier"]
    order_thred = next(item for item in output["threds"] if item["patternId"] == "purchase_order")
    assert order_thred["parentThredId"] == t

    # The supplier (a remote service) confirms the order: matched by $isResponseFor.
    confirm = {
        "id": "c1",
        "type": "org.example.supplier",
        "re": order["event"]["id"],
        "thredId": order_thred["id"],
        "source": {"id": "supplier_1"},
    }
    output = await driver.send(confirm)
    assert titles(output) == ["Order confirmed"]
    assert "org.example.supplier" in output["messages"][0]["to"]
    assert [view["patternName"] for view in output["archived"]] == ["Purchase Order"]

    # Delivery arrives unbound and reaches the request waiting with allowUnboundEvents.
    delivery = {
        "id": "d1",
        "type": "org.example.delivery",
        "source": {"id": "purchasing_1"},
        "data": {"content": {"values": {"item": "laptop"}}},
    }
    output = await driver.send(delivery)
    assert titles(output) == ["Delivered: laptop"]
    assert output["messages"][0]["event"]["re"] == ask_id
    assert output["threds"] == []
    assert [view["patternName"] for view in output["archived"]] == ["Purchase Request"]


async def test_rejection_terminates_with_the_reason() -> None:
    driver = workflow()
    t, ask_id = await asked(driver)
    output = await driver.send(
        answer("a1", re=ask_id, thred_id=t, source="dave", approved=False, reason="too expensive")
    )
    assert titles(output) == ["Action by dave", "Purchase rejected"]
    assert output["messages"][1]["event"]["data"]["description"] == "too expensive"
    assert output["threds"] == []


async def test_answers_from_non_approvers_or_to_other_questions_are_ignored() -> None:
    driver = workflow()
    t, ask_id = await asked(driver)
    assert (await driver.send(answer("a1", re=ask_id, thred_id=t, source="alice", approved=True)))[
        "messages"
    ] == []
    assert (await driver.send(answer("a2", re="evtOther", thred_id=t, approved=True)))[
        "messages"
    ] == []


async def test_unanswered_request_expires_after_an_hour() -> None:
    driver = workflow()
    t, _ = await asked(driver)
    output = await driver.advance(3_600_001)
    assert output["messages"] == []
    assert only_thred(output)["reactionStore"]["reactionName"] == "expired"
    reminder = {
        "id": "m",
        "type": "org.example.purchase.reminder",
        "thredId": t,
        "source": {"id": "alice"},
    }
    output = await driver.send(reminder)
    assert titles(output) == ["Request expired"]
    assert recipients(output) == [{"alice", "bob"}]


async def test_heartbeat_monitor_is_single_and_notices_silence() -> None:
    driver = workflow()
    beat = {"type": "org.example.heartbeat", "source": {"id": "sensor-1"}}
    output = await driver.send({"id": "h1", **beat})
    assert titles(output) == ["Monitoring sensor-1"]
    t = only_thred(output)["id"]
    assert (await driver.send({"id": "h2", **beat}))["messages"] == []
    assert titles(await driver.send({"id": "h3", "thredId": t, **beat})) == ["beat"]
    output = await driver.advance(30_001)
    assert only_thred(output)["reactionStore"]["reactionName"] == "Heartbeat Monitor_2"
    assert titles(await driver.send({"id": "h4", "thredId": t, **beat})) == ["Heartbeat resumed"]
