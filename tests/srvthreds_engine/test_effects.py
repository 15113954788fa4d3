"""Active expiry, spawn, broadcast, echo and address resolution."""

from __future__ import annotations

from typing import Any

from srvthreds_engine.core.addresses import AddressBook, ResolverConfig, SessionsModel
from tests.srvthreds_engine.driver import Driver, error_of, only_thred, recipients, titles
from tests.srvthreds_engine.test_conditions import event, is_type, pattern, say, started, starter


def expiring(interval: int, **transition: Any) -> dict[str, Any]:
    reaction: dict[str, Any] = {
        "name": "waiting",
        "condition": {"type": "filter", "xpr": is_type("answer"), **say("answered")},
        "expiry": {"interval": interval},
    }
    if transition:
        reaction["expiry"]["transition"] = transition
    return reaction


LATE = {"name": "late", "condition": {"type": "filter", "xpr": "true", **say("late")}}
REMEMBER = {
    "condition": {
        "type": "filter",
        "xpr": is_type("start"),
        "onTrue": {"xpr": "$setLocal('first', $event)"},
        **say("started"),
    }
}


async def test_expiry_fires_when_the_virtual_clock_passes_the_deadline() -> None:
    # The original checked expiry only when the next event arrived.
    driver = Driver(
        pattern(REMEMBER, expiring(1000, name="late", input="local", localName="first"), LATE)
    )
    t = await started(driver)
    assert driver.replay.engine.next_timer_due_ms() == 1767225600000 + 1001
    output = await driver.advance(1000)
    assert output["messages"] == []
    output = await driver.advance(1)
    assert titles(output) == ["late"]
    assert output["messages"][0]["event"]["thredId"] == t
    assert output["threds"] == []
    assert driver.replay.engine.next_timer_due_ms() is None


async def test_expiry_default_transition_is_next_without_input() -> None:
    driver = Driver(pattern(starter(), expiring(10), LATE))
    await started(driver)
    output = await driver.advance(11)
    assert output["messages"] == []
    assert only_thred(output)["reactionStore"]["reactionName"] == "late"


async def test_expiry_forward_input_gives_nothing() -> None:
    driver = Driver(pattern(starter(), expiring(10, name="late", input="forward"), LATE))
    await started(driver)
    output = await driver.advance(50)
    assert output["messages"] == []
    assert only_thred(output)["reactionStore"]["reactionName"] == "late"


async def test_event_after_the_deadline_sees_the_expiry_first() -> None:
    driver = Driver(pattern(starter(), expiring(10), LATE))
    t = await started(driver)
    # Move time without running timers: the event itself must trigger the expiry.
    driver.replay.clock.advance(11)
    output = await driver.send(event("a", "answer", thredId=t))
    assert titles(output) == ["late"]
    assert output["threds"] == []


async def test_matching_before_the_deadline_cancels_the_timer() -> None:
    driver = Driver(pattern(starter(), expiring(10), LATE))
    t = await started(driver)
    await driver.send(event("a", "answer", thredId=t))
    assert only_thred(driver.outputs[-1])["reactionStore"]["reactionName"] == "late"
    # The old deadline is gone: passing it fires nothing, and no timer is due any more.
    output = await driver.advance(20)
    assert output["messages"] == []
    assert only_thred(output)["reactionStore"]["reactionName"] == "late"
    assert driver.replay.engine.next_timer_due_ms() is None
    assert (await driver.advance(100))["messages"] == []


def child_pattern(name: str, *, title: str) -> dict[str, Any]:
    first = {
        "condition": {
            "type": "filter",
            "xpr": "$exists($event.thredId)",
            **say(title, "$thred"),
            "transition": {"name": "$noTransition"},
        }
    }
    return pattern(first, name=name)


def spawner(spawn: dict[str, Any]) -> dict[str, Any]:
    first = {
        "condition": {
            "type": "filter",
            "xpr": is_type("start"),
            "onTrue": {"xpr": "$setLocal('keep', $event)"},
            **say("parent"),
            "spawn": spawn,
        }
    }
    second = {
        "condition": {
            "type": "filter",
            "xpr": is_type("stop"),
            "transition": {"name": "$terminate"},
        }
    }
    return pattern(first, second, name="Parent")


async def test_spawn_child_with_forward_input_and_context_copy() -> None:
    spawn = {
        "names": ["kid", "Unknown Pattern"],
        "input": "forward",
        "type": "child",
        "context": True,
    }
    driver = Driver(spawner(spawn), child_pattern("Kid", title="child ran"))
    output = await driver.send(event("s", "start"))
    assert titles(output) == ["parent", "child ran"]
    parent, child = sorted(output["threds"], key=lambda thred: thred["patternId"])[::-1]
    assert parent["childThredIds"] == [child["id"]]
    assert child["parentThredId"] == parent["id"]
    assert child["spawnType"] == "child"
    assert child["thredContext"]["scope"]["keep"]["id"] == "s"
    assert set(output["messages"][1]["to"]) == {"out", "test.dataset"}
    assert output["messages"][1]["event"]["thredId"] == child["id"]


async def test_spawn_default_input_waits_and_parent_termination_cascades_to_children() -> None:
    spawn = {"names": ["kid"], "type": "child"}
    driver = Driver(spawner(spawn), child_pattern("Kid", title="child ran"))
    output = await driver.send(event("s", "start"))
    assert titles(output) == ["parent"]
    assert len(output["threds"]) == 2
    parent_id = next(t["id"] for t in output["threds"] if t["patternId"] == "parent")
    output = await driver.send(event("x", "stop", thredId=parent_id))
    assert output["threds"] == []
    assert {view["patternName"] for view in output["archived"]} == {"Parent", "Kid"}


async def test_sibling_is_not_terminated_with_the_spawner() -> None:
    spawn = {"names": ["kid"], "type": "sibling", "input": "local", "localName": "keep"}
    driver = Driver(spawner(spawn), child_pattern("Kid", title="sibling ran"))
    output = await driver.send(event("s", "start"))
    assert titles(output) == ["parent", "sibling ran"]
    parent_id = next(t["id"] for t in output["threds"] if t["patternId"] == "parent")
    output = await driver.send(event("x", "stop", thredId=parent_id))
    assert [t["spawnType"] for t in output["threds"]] == ["sibling"]


async def test_self_spawn_does_not_deadlock() -> None:
    spawn = {"names": ["parent"], "type": "child"}
    driver = Driver(spawner(spawn))
    output = await driver.send(event("s", "start"))
    assert len(output["threds"]) == 2


def broadcaster(**fields: Any) -> dict[str, Any]:
    reply = {
        "condition": {
            "type": "filter",
            "xpr": is_type("org.wt.client.tell"),
            **say("ack", "$thred"),
            "transition": {"name": "$noTransition"},
        }
    }
    first = {"condition": {"type": "filter", "xpr": is_type("start"), **say("started", "$group0")}}
    return pattern(first, reply, name="Chat", **fields)


def tell(event_id: str, source: str, thred_id: str, **values: Any) -> dict[str, Any]:
    return event(
        event_id,
        "org.wt.client.tell",
        source=source,
        thredId=thred_id,
        re="r0",
        data={"content": {"values": values}},
    )


def shout(event_id: str, source: str, thred_id: str, **values: Any) -> dict[str, Any]:
    return event(
        event_id,
        "org.wt.client.broadcast",
        source=source,
        thredId=thred_id,
        data={"content": {"values": values}},
    )


async def test_broadcast_goes_to_the_thred_minus_the_sender() -> None:
    driver = Driver(broadcaster(broadcastAllowed=True))
    t = await started(driver)
    output = await driver.send(shout("b", "participant0", t, message="hi"))
    [message] = output["messages"]
    assert set(message["to"]) == {"participant1", "test.dataset"}
    assert message["event"]["type"] == "org.wt.broadcast"
    assert message["event"]["data"] == {
        "title": "Message from participant0",
        "content": {
            "valuesType": "broadcastMessage",
            "values": {"message": "hi", "messageSource": {"id": "participant0"}},
        },
    }
    assert only_thred(output)["reactionStore"]["reactionName"] == "Chat_1"


async def test_broadcast_errors() -> None:
    driver = Driver(broadcaster())
    t = await started(driver)
    assert error_of(await driver.send(shout("b1", "participant0", t, message="hi"))) == {
        "message": "Pattern Chat does not allow broadcast events",
        "code": 4101,
    }
    driver = Driver(broadcaster(broadcastAllowed=True))
    t = await started(driver)
    assert error_of(await driver.send(shout("b2", "outsider", t, message="hi"))) == {
        "message": f"Participant outsider is not a member of the thred {t} and cannot broadcast",
        "code": 4101,
    }
    assert error_of(await driver.send(shout("b3", "participant0", t))) == {
        "message": "Broadcast event b3 must have a 'message' value",
        "code": 4202,
    }


async def test_echo_goes_out_before_the_reactions_message() -> None:
    driver = Driver(broadcaster(echoResponses=True))
    t = await started(driver)
    output = await driver.send(tell("c", "participant1", t, answer=42))
    assert titles(output) == ["Action by participant1", "ack"]
    echo = output["messages"][0]
    assert set(echo["to"]) == {"participant0", "test.dataset"}
    assert echo["event"]["data"]["content"] == {
        "valuesType": "broadcastValues",
        "values": {"answer": 42, "messageSource": {"id": "participant1"}, "re": "r0"},
    }
    output = await driver.send(tell("d", "outsider", t))
    assert error_of(output)["code"] == 4101


def test_addresses_groups_thred_services_and_all() -> None:
    book = AddressBook(
        SessionsModel.model_validate(
            {
                "groups": [
                    {"name": "g", "participants": [{"participantId": "a"}, {"participantId": "b"}]}
                ]
            }
        ),
        resolver_config=ResolverConfig.model_validate(
            {
                "agents": [
                    {"name": "S", "nodeType": "org.svc", "nodeId": "svc1"},
                    {"name": "R", "nodeType": "org.remote", "nodeId": "r1", "remote": True},
                ]
            }
        ),
    )
    members = ["a", "org.svc", "svc1", "org.remote", "c"]
    assert book.resolve(["$g", "a", "$nobody", "lit"], thred_participants=[]) == ["a", "b", "lit"]
    assert book.resolve(["$thred"], thred_participants=members) == ["a", "org.remote", "c"]
    assert book.resolve(
        ["$all", "x"], thred_participants=members, participants_with_sessions=["s1", "s2"]
    ) == ["s1", "s2"]


async def test_all_resolves_to_participants_with_sessions() -> None:
    first = {"condition": {"type": "filter", "xpr": is_type("start"), **say("everyone", "$all")}}
    driver = Driver(pattern(first))
    await driver.session("alice")
    await driver.session("bob")
    assert recipients(await driver.send(event("s", "start"))) == [{"alice", "bob"}]
