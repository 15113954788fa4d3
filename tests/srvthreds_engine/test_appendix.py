"""The worked examples A (conditions) and B (transitions) of the spec, driven through replay."""

from __future__ import annotations

import re

from tests.srvthreds_engine.driver import (
    Driver,
    error_of,
    only_thred,
    recipients,
    std_event,
    titles,
)

THRED_ID = re.compile(r"^conditions_test_[A-Za-z0-9_-]{21}$")
EVENT_ID = re.compile(r"^evt[A-Za-z0-9_-]{21}$")


async def start_conditions(driver: Driver) -> str:
    output = await driver.send(std_event("0", "inbound.event0"))
    assert titles(output) == ["outbound.event0"]
    assert recipients(output) == [{"outbound.event0.recipient"}]
    thred = only_thred(output)
    assert thred["reactionStore"]["reactionName"] == "Conditions Test_1"
    assert thred["status"] == "a"
    assert set(thred["thredContext"]["participantIds"]) == {
        "outbound.event0.recipient",
        "test.dataset",
    }
    event = output["messages"][0]["event"]
    assert THRED_ID.match(event["thredId"])
    assert event["thredId"] == thred["id"]
    return str(thred["id"])


async def test_a1_filter_starts_thred_with_engine_event_defaults() -> None:
    driver = Driver("conditions_test.json")
    thred_id = await start_conditions(driver)
    event = driver.outputs[0]["messages"][0]["event"]
    assert EVENT_ID.match(event["id"])
    assert event["type"] == "org.wt.tell"
    assert event["source"] == {"id": "SYSTEM", "name": "Workthreds Bot"}
    assert event["time"] == 1767225600000
    assert "re" not in event
    assert event["data"] == {"title": "outbound.event0"}
    assert thred_id.startswith("conditions_test_")


async def test_a_sequence_conditions() -> None:
    driver = Driver("conditions_test.json")
    t = await start_conditions(driver)

    # A2: and waits for every operand, keeps its state, then fires and clears it.
    output = await driver.send(std_event("1", "inbound.event1", re="0", thredId=t))
    assert output["messages"] == []
    thred = only_thred(output)
    assert thred["reactionStore"]["conditionState"] == {"0": {"operandResults": [True, False]}}
    assert thred["thredContext"]["scope"]["event1"] == std_event(
        "1", "inbound.event1", re="0", thredId=t
    )
    output = await driver.send(std_event("1a", "inbound.event1a", thredId=t))
    assert titles(output) == ["outbound.event1"]
    assert recipients(output) == [{"outbound.event1.recipient"}]
    assert output["messages"][0]["event"]["data"]["description"] == (
        "response to event 1 and event 1a"
    )
    thred = only_thred(output)
    assert thred["reactionStore"]["reactionName"] == "orConditionReaction"
    assert thred["reactionStore"]["conditionState"] == {}

    # A3: first or operand with a self transition.
    output = await driver.send(std_event("2", "inbound.event2", thredId=t))
    assert titles(output) == ["outbound.event2"]
    assert recipients(output) == [{"outbound.event2.recipient"}]
    assert only_thred(output)["reactionStore"]["reactionName"] == "orConditionReaction"

    # A4: second operand, default next.
    output = await driver.send(std_event("2a", "inbound.event2a", thredId=t))
    assert titles(output) == ["outbound.event2a"]
    assert recipients(output) == [{"outbound.event2a.recipient"}]
    assert only_thred(output)["reactionStore"]["reactionName"] == "orConditionReaction2"

    # A5: operand directives override the parent's.
    output = await driver.send(std_event("3", "inbound.event3", thredId=t))
    assert titles(output) == ["outbound.event3"]
    assert recipients(output) == [{"outbound.event3.recipient"}]
    assert only_thred(output)["reactionStore"]["reactionName"] == "orConditionReaction2"

    # A6: an operand without directives uses the parent's.
    output = await driver.send(std_event("3a", "inbound.event3a", thredId=t))
    assert titles(output) == ["outbound.event3a"]
    assert recipients(output) == [{"outbound.event3a.recipient"}]
    assert only_thred(output)["reactionStore"]["reactionName"] == "orConditionReaction3"

    # A7: parent transform with the operand's transition, then the end of the thred.
    output = await driver.send(std_event("4", "inbound.event4", thredId=t))
    assert titles(output) == ["outbound.event4x"]
    assert recipients(output) == [{"outbound.event4x.recipient"}]
    assert only_thred(output)["reactionStore"]["reactionName"] == "orConditionReaction3"
    output = await driver.send(std_event("4a", "inbound.event4a", thredId=t))
    assert titles(output) == ["outbound.event4x"]
    assert recipients(output) == [{"outbound.event4x.recipient"}]
    assert output["threds"] == []
    assert [view["id"] for view in output["archived"]] == [t]


async def test_a2_variant_completed_operand_is_not_reevaluated() -> None:
    driver = Driver("conditions_test.json")
    t = await start_conditions(driver)
    await driver.send(std_event("1", "inbound.event1", re="0", thredId=t))
    output = await driver.send(std_event("1b", "inbound.event1", thredId=t))
    assert output["messages"] == []
    assert only_thred(output)["thredContext"]["scope"]["event1"]["id"] == "1"
    output = await driver.send(std_event("1a", "inbound.event1a", thredId=t))
    assert output["messages"][0]["event"]["data"]["description"] == (
        "response to event 1 and event 1a"
    )


async def test_b_sequence_transitions() -> None:
    driver = Driver("transition_test.json")

    # B1: no pattern matches.
    output = await driver.send({"id": "x", "type": "unknown.event", "source": {"id": "unknown"}})
    assert output["messages"] == []
    assert output["threds"] == []
    assert output["log"] == [{"type": "np", "eventId": "x"}]
    assert "thredId" not in driver.replay.persistence.events["x"]

    # B2: start.
    output = await driver.send(std_event("0", "inbound.event0"))
    assert titles(output) == ["outbound.event0"]
    t = only_thred(output)["id"]
    assert only_thred(output)["reactionStore"]["reactionName"] == "Transition Test_1"
    assert output["log"] == [
        {
            "type": "m",
            "eventId": "0",
            "thredId": t,
            "fromReaction": "Transition Test_0",
            "toReaction": "Transition Test_1",
        }
    ]

    # B3: default transition is next.
    output = await driver.send(std_event("1", "inbound.event1", re="0", thredId=t))
    assert titles(output) == ["outbound.event1"]
    assert recipients(output) == [{"outbound.event1.recipient"}]
    assert only_thred(output)["reactionStore"]["reactionName"] == "Transition Test_2"

    # B4: $next with forward input runs the next reaction with the same event.
    output = await driver.send(std_event("2", "inbound.event2", thredId=t))
    assert titles(output) == ["outbound.event2", "outbound.event2a"]
    assert recipients(output) == [{"outbound.event2.recipient"}, {"outbound.event2a.recipient"}]
    thred = only_thred(output)
    assert thred["thredContext"]["scope"]["event2"] == std_event("2", "inbound.event2", thredId=t)
    assert thred["reactionStore"]["reactionName"] == "event4reaction"
    assert [(r["type"], r["fromReaction"], r["toReaction"]) for r in output["log"]] == [
        ("m", "Transition Test_2", "event2areaction"),
        ("m", "Transition Test_2", "event4reaction"),
    ]

    # B5: a bound event that matches nothing changes nothing.
    nomatch = {"id": "x", "type": "unknown.event", "source": {"id": "unknown"}, "thredId": t}
    output = await driver.send(nomatch)
    assert output["messages"] == []
    assert only_thred(output)["reactionStore"]["reactionName"] == "event4reaction"
    assert output["log"] == [
        {"type": "nm", "eventId": "x", "thredId": t, "fromReaction": "event4reaction"}
    ]

    # B6: named transition.
    output = await driver.send(std_event("4", "inbound.event4", thredId=t))
    assert titles(output) == ["outbound.event4"]
    assert only_thred(output)["reactionStore"]["reactionName"] == "event3reaction"

    # B7: local input replays the stored event.
    output = await driver.send(std_event("3", "inbound.event3", thredId=t))
    assert titles(output) == ["outbound.event3", "outbound.event2a"]
    assert recipients(output) == [{"outbound.event3.recipient"}, {"outbound.event2a.recipient"}]
    assert only_thred(output)["reactionStore"]["reactionName"] == "event4reaction"

    # B8: an or operand without a transition goes next.
    output = await driver.send(std_event("4a", "inbound.event4a", thredId=t))
    assert titles(output) == ["outbound.event4a"]
    assert only_thred(output)["reactionStore"]["reactionName"] == "event5reaction"

    # B9: terminate: the message goes out, then the thred is archived and deleted.
    output = await driver.send(std_event("5", "inbound.event5", thredId=t))
    assert titles(output) == ["outbound.event5"]
    assert recipients(output) == [{"outbound.event5.recipient"}]
    assert output["threds"] == []
    [archived] = output["archived"]
    assert archived["id"] == t
    assert archived["status"] == "t"
    assert archived["endTime"] == 1767225600000
    assert driver.replay.persistence.archive[-1]["thred"]["status"] == "t"

    # B10: an event for the terminated thred gets 5203.
    output = await driver.send(nomatch)
    message = f"Thred {t} does not, or no longer exists for event x of type unknown.event"
    assert error_of(output) == {"message": message, "code": 5203}
    event = output["messages"][0]["event"]
    assert output["messages"][0]["to"] == ["unknown"]
    assert event["re"] == "x"
    assert event["thredId"] == t
    assert event["data"]["title"] == f"Failure processing Event x : {message}"
    assert output["log"] == [{"type": "nt", "eventId": "x", "thredId": t}]
