"""System events: sysControl, userControl and dataControl, with role checks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.srvthreds_engine.driver import Driver, error_of, only_thred
from tests.srvthreds_engine.test_conditions import event, is_type, pattern, say, started, starter


def control(
    kind: str, source: str, *, thred_id: str = "SYSTEM", event_id: str = "c1", **values: Any
) -> dict[str, Any]:
    return event(
        event_id,
        f"org.wt.control.{kind}",
        source=source,
        thredId=thred_id,
        data={"content": {"values": values}},
    )


def reply(output: dict[str, Any]) -> dict[str, Any]:
    [message] = output["messages"]
    assert message["event"]["thredId"] == "SYSTEM"
    assert (
        message["event"]["data"]["title"]
        == f"System Event -> Thred: SYSTEM -> Re: Event: {message['event']['re']}"
    )
    values: dict[str, Any] = message["event"]["data"]["content"]["values"]
    return values


async def admin_driver(**fields: Any) -> Driver:
    driver = Driver(
        pattern(
            starter(),
            {
                "name": "middle",
                "condition": {"type": "filter", "xpr": is_type("go"), **say("went")},
            },
            {"name": "last", "condition": {"type": "filter", "xpr": "true"}},
            **fields,
        )
    )
    await driver.session("root", roles=["admin"])
    await driver.session("user")
    return driver


async def test_admin_operations_need_the_admin_role() -> None:
    # The original let any session run admin operations.
    driver = await admin_driver()
    for kind in ("sysControl", "dataControl"):
        output = await driver.send(control(kind, "user", op="getThreds"))
        assert error_of(output) == {
            "message": "Participant user lacks required role: admin",
            "code": 4101,
        }
        assert output["messages"][0]["to"] == ["user"]


async def test_system_event_argument_errors() -> None:
    driver = await admin_driver()
    assert error_of(
        await driver.send(control("sysControl", "root", thred_id="t", op="getThreds"))
    ) == {"message": "System event must have a system thredId: SYSTEM", "code": 4202}
    assert error_of(await driver.send(control("sysControl", "root"))) == {
        "message": "No operation name supplied for system event",
        "code": 4202,
    }
    assert error_of(await driver.send(control("sysControl", "root", op="fly"))) == {
        "message": "No operation found called fly for system event",
        "code": 4200,
    }
    assert error_of(await driver.send(control("userControl", "user", op="getEvents"))) == {
        "message": "No thredId supplied for getEvents operation",
        "code": 4202,
    }
    assert error_of(
        await driver.send(control("sysControl", "root", op="terminateThred", thredId="nope"))
    ) == {"message": "Thred nope does not, or no longer exists", "code": 5203}


async def test_get_threds_by_status() -> None:
    driver = await admin_driver()
    t = await started(driver)
    values = reply(
        await driver.send(control("sysControl", "root", op="getThreds", status="active"))
    )
    assert values["status"] == "OK"
    assert values["op"] == "getThreds"
    assert [view["id"] for view in values["threds"]] == [t]
    assert values["threds"][0]["currentReaction"] == {"reactionName": "middle"}
    values = reply(
        await driver.send(control("sysControl", "root", op="getThreds", status="terminated"))
    )
    assert values["threds"] == []


async def test_terminate_thred_keeps_the_instance_count_right() -> None:
    # The original never decremented the count on an admin terminate.
    driver = await admin_driver(maxInstances=1)
    t = await started(driver)
    output = await driver.send(control("sysControl", "root", op="terminateThred", thredId=t))
    assert reply(output)["status"] == "OK"
    assert output["threds"] == []
    assert [view["id"] for view in output["archived"]] == [t]
    assert (await driver.replay.storage.get_counters("cond")).instances == 0
    await started(driver)


async def test_terminate_all_threds() -> None:
    driver = await admin_driver()
    await started(driver)
    await driver.send(event("s2", "start"))
    output = await driver.send(control("sysControl", "root", op="terminateAllThreds"))
    assert len(reply(output)["thredIds"]) == 2
    assert output["threds"] == []
    assert (await driver.replay.storage.get_counters("cond")).instances == 0


async def test_transition_thred_moves_the_thred() -> None:
    driver = await admin_driver()
    t = await started(driver)
    output = await driver.send(
        control("sysControl", "root", op="transitionThred", thredId=t, transition={"name": "last"})
    )
    assert reply(output)["status"] == "OK"
    assert only_thred(output)["reactionStore"]["reactionName"] == "last"
    output = await driver.send(
        control("sysControl", "root", op="transitionThred", thredId=t, transition="$terminate")
    )
    assert output["threds"] == []


async def test_reload_patterns_uses_the_pattern_loader() -> None:
    driver = await admin_driver()
    engine = driver.replay.engine
    replacement = [*engine.patterns]

    async def loader() -> list[Any]:
        return replacement

    engine.pattern_loader = loader
    assert reply(await driver.send(control("sysControl", "root", op="reloadAllPatterns")))[
        "patternIds"
    ] == ["cond"]
    assert (
        error_of(
            await driver.send(control("sysControl", "root", op="reloadPattern", patternId="none"))
        )["code"]
        == 5201
    )
    assert (
        reply(
            await driver.send(control("sysControl", "root", op="reloadPattern", patternId="cond"))
        )["patternId"]
        == "cond"
    )


async def test_shutdown_is_handed_to_the_server() -> None:
    driver = await admin_driver()
    delays: list[int] = []
    driver.replay.engine.shutdown_requested = delays.append
    assert (
        reply(await driver.send(control("sysControl", "root", op="shutdown", delay=5)))["status"]
        == "OK"
    )
    assert delays == [5]


async def test_watch_pushes_debounced_thred_views_until_stopped() -> None:
    driver = await admin_driver()
    output = await driver.send(
        control("sysControl", "root", event_id="w1", op="watchThreds", directive="start")
    )
    assert reply(output)["directive"] == "start"
    t = await started(driver)
    await driver.send(event("s2", "start"))
    assert driver.replay.engine.next_timer_due_ms() == 1767225600000 + 1000
    assert (await driver.advance(999))["messages"] == []
    output = await driver.advance(1)
    [push] = output["messages"]
    assert push["to"] == ["root"]
    assert push["event"]["re"] == "w1"
    assert len(push["event"]["data"]["content"]["values"]["threds"]) == 2
    assert (await driver.advance(5000))["messages"] == []
    await driver.send(
        control("sysControl", "root", event_id="w2", op="watchThreds", directive="stop")
    )
    await driver.send(event("1", "go", thredId=t))
    assert (await driver.advance(5000))["messages"] == []


async def test_watch_expires_after_a_minute_unless_renewed() -> None:
    driver = await admin_driver()
    await driver.send(
        control("sysControl", "root", event_id="w1", op="watchThreds", directive="start")
    )
    await driver.advance(59_000)
    await driver.send(
        control("sysControl", "root", event_id="w2", op="watchThreds", directive="renew")
    )
    await driver.advance(58_000)
    await started(driver)
    assert [m["event"]["re"] for m in (await driver.advance(1000))["messages"]] == ["w1"]
    await driver.advance(2000)
    await driver.send(event("s2", "start"))
    assert (await driver.advance(1000))["messages"] == []


@pytest.mark.memory_only(reason="on MongoDB dataControl runs; the refusal is memory's")
async def test_data_control_without_a_database_is_refused_naming_why() -> None:
    # It used to answer a list of nulls: in memory there is nothing to run the tasks against.
    driver = await admin_driver()
    request = event(
        "d1",
        "org.wt.control.dataControl",
        source="root",
        thredId="SYSTEM",
        data={"content": {"tasks": [{"op": "get", "params": {"type": "X"}}]}},
    )
    output = await driver.send(request)
    assert error_of(output) == {
        "message": "dataControl needs a persistence backend (MongoDB); none is configured: "
        "the embedded mode and replay keep their records in memory only",
        "code": 5200,
    }
    assert output["messages"][0]["to"] == ["root"]


async def test_user_control_lists_own_threds_events_and_system_spec() -> None:
    driver = await admin_driver()
    t = await started(driver, source="user")
    values = reply(await driver.send(control("userControl", "user", op="getThreds")))
    [result] = values["results"]
    assert result["thred"]["id"] == t
    assert result["lastEvent"]["type"] == "org.wt.tell"
    values = reply(await driver.send(control("userControl", "user", op="getEvents", thredId=t)))
    assert [item["id"] for item in values["events"]] == ["s"]
    values = reply(await driver.send(control("userControl", "user", op="getSystemSpec")))
    spec = values["systemSpec"]
    assert [agent["nodeId"] for agent in spec["serviceSpecs"]] == ["test_agent", "test_agent_2"]
    assert [group["name"] for group in spec["addressSpec"]["groups"]] == ["group0", "group1"]
