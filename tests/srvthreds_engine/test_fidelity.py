"""Pattern behaviour exactly as the clarified spec states it, one behaviour a test, via replay."""

from __future__ import annotations

from typing import Any

import pytest

from srvthreds_engine.core.errors import PatternError
from srvthreds_engine.core.patterns import parse_pattern
from tests.srvthreds_engine.driver import Driver, error_of, only_thred, std_event, titles
from tests.srvthreds_engine.test_conditions import event, is_type, pattern, say, started, starter
from tests.srvthreds_engine.test_effects import broadcaster, shout, tell

START_MS = 1767225600000


def step(event_type: str, title: str, **node: Any) -> dict[str, Any]:
    return {"condition": {"type": "filter", "xpr": is_type(event_type), **say(title), **node}}


def log_rows(output: dict[str, Any]) -> list[tuple[str, str | None, str | None, str | None]]:
    return [
        (row["type"], row.get("eventId"), row.get("fromReaction"), row.get("toReaction"))
        for row in output["log"]
    ]


# --- §3/§4: allowedSources and allowedRoles are part of `test` ------------------------------


async def test_a_source_the_initial_reaction_does_not_allow_creates_no_thred() -> None:
    driver = Driver(pattern(starter(allowedSources=["alice"])))
    output = await driver.send(event("1", "start", source="mallory"))
    assert output["threds"] == []
    assert output["messages"] == []
    assert log_rows(output) == [("np", "1", None, None)]


async def test_a_source_without_the_initial_reactions_role_creates_no_thred() -> None:
    driver = Driver(pattern(starter(permissions={"allowedRoles": ["operator"]}), step("n", "n")))
    await driver.session("bob", roles=["viewer"])
    output = await driver.send(event("1", "start", source="bob"))
    assert output["threds"] == []
    assert log_rows(output) == [("np", "1", None, None)]
    await driver.session("carol", roles=["operator"])
    output = await driver.send(event("2", "start", source="carol"))
    assert titles(output) == ["started"]
    assert len(output["threds"]) == 1


async def test_an_unbound_event_is_offered_only_to_threds_whose_reaction_allows_its_source() -> (
    None
):
    waiting = {
        "name": "waiting",
        "allowUnboundEvents": True,
        "allowedSources": "$group0",
        "condition": {"type": "filter", "xpr": is_type("news"), **say("heard")},
    }
    driver = Driver(pattern(starter(), waiting))
    t = await started(driver)
    output = await driver.send(event("n1", "news", source="stranger"))
    assert output["messages"] == []
    assert log_rows(output) == [("np", "n1", None, None)]
    assert only_thred(output)["reactionStore"]["reactionName"] == "waiting"
    output = await driver.send(event("n2", "news", source="participant0"))
    assert titles(output) == ["heard"]
    assert output["messages"][0]["event"]["thredId"] == t


# --- §4: the and-state is stored after every event applied to an and that does not complete ----


async def test_and_state_is_stored_after_an_event_that_matched_no_operand() -> None:
    both = {
        "condition": {
            "type": "and",
            "operands": [
                {"type": "filter", "xpr": is_type("a")},
                {"type": "filter", "xpr": is_type("b")},
            ],
            **say("both"),
        }
    }
    driver = Driver(pattern(starter(), both))
    t = await started(driver)
    assert only_thred(driver.outputs[-1])["reactionStore"]["conditionState"] == {}
    output = await driver.send(event("x", "neither", thredId=t))
    assert output["messages"] == []
    state = only_thred(output)["reactionStore"]["conditionState"]
    assert state == {"0": {"operandResults": [False, False]}}
    await driver.send(event("a", "a", thredId=t))
    output = await driver.send(event("b", "b", thredId=t))
    assert titles(output) == ["both"]


# --- §6: a "$xpr" key holds plain JSONata text, merged at any depth --------------------------


def spreading(template: dict[str, Any]) -> dict[str, Any]:
    return pattern(
        {
            "condition": {
                "type": "filter",
                "xpr": is_type("start"),
                "transform": {"eventDataTemplate": template},
                "publish": {"to": "out"},
            }
        }
    )


async def test_xpr_key_value_is_plain_jsonata_merged_into_the_enclosing_object_at_any_depth() -> (
    None
):
    template = {
        "title": "t",
        "$xpr": "{'top': $event.id}",
        "deep": {"list": [{"keep": 1, "$xpr": "{'inner': $event.type & '!'}"}]},
    }
    output = await Driver(spreading(template)).send(event("e1", "start"))
    assert output["messages"][0]["event"]["data"] == {
        "title": "t",
        "top": "e1",
        "deep": {"list": [{"keep": 1, "inner": "start!"}]},
    }


async def test_xpr_key_with_a_non_object_result_adds_nothing() -> None:
    output = await Driver(spreading({"title": "t", "$xpr": "'text'"})).send(event("e", "start"))
    assert output["messages"][0]["event"]["data"] == {"title": "t"}


async def test_xpr_key_also_takes_the_wrapped_form() -> None:
    template = {"title": "t", "$xpr": "$xpr( {'id': $event.id} )"}
    output = await Driver(spreading(template)).send(event("e2", "start"))
    assert output["messages"][0]["event"]["data"] == {"title": "t", "id": "e2"}


def test_xpr_key_that_does_not_parse_is_a_load_error_at_its_path() -> None:
    with pytest.raises(PatternError) as raised:
        parse_pattern(spreading({"nested": {"$xpr": "{'a': "}}), file="p.json")
    assert raised.value.json_path == (
        "reactions[0].condition.transform.eventDataTemplate.nested.$xpr"
    )


# --- §9: $millis() and $now() read the engine's clock ------------------------------------------


async def test_millis_and_now_come_from_the_virtual_clock() -> None:
    clocked = {
        "condition": {
            "type": "filter",
            "xpr": "$event.type = 'tick'",
            "transform": {
                "eventDataTemplate": {
                    "title": "tick",
                    "ms": "$xpr( $millis() )",
                    "now": "$xpr( $now() )",
                    "year": "$xpr( $now('[Y0001]') )",
                }
            },
            "publish": {"to": "out"},
            "transition": {"name": "$noTransition"},
        }
    }
    driver = Driver(pattern(clocked))
    output = await driver.send(event("1", "tick"))
    data = output["messages"][0]["event"]["data"]
    assert data == {
        "title": "tick",
        "ms": START_MS,
        "now": "2026-01-01T00:00:00.000Z",
        "year": "2026",
    }
    t = only_thred(output)["id"]
    await driver.advance(90_061_001)
    output = await driver.send(event("2", "tick", thredId=t))
    data = output["messages"][0]["event"]["data"]
    assert data["ms"] == START_MS + 90_061_001
    assert data["now"] == "2026-01-02T01:01:01.001Z"


async def test_millis_in_a_filter_reads_the_virtual_clock() -> None:
    gated = step("start", "started")
    gated["condition"]["xpr"] = f"$event.type = 'start' and $millis() >= {START_MS + 5000}"
    driver = Driver(pattern(gated))
    assert (await driver.send(event("early", "start")))["threds"] == []
    await driver.advance(5000)
    assert titles(await driver.send(event("late", "start"))) == ["started"]


# --- §13: every log record of a run names its input and the reaction it started in ---------


async def test_log_records_of_a_local_hop_carry_the_runs_input_and_start_reaction() -> None:
    driver = Driver("transition_test.json")
    output = await driver.send(std_event("0", "inbound.event0"))
    t = only_thred(output)["id"]
    await driver.send(std_event("1", "inbound.event1", thredId=t))
    output = await driver.send(std_event("2", "inbound.event2", thredId=t))
    assert log_rows(output) == [
        ("m", "2", "Transition Test_2", "event2areaction"),
        ("m", "2", "Transition Test_2", "event4reaction"),
    ]
    await driver.send(std_event("4", "inbound.event4", thredId=t))
    output = await driver.send(std_event("3", "inbound.event3", thredId=t))
    # The local hop replays stored event 2, yet the record names input 3 and the run's start.
    assert log_rows(output) == [
        ("m", "3", "event3reaction", "event2areaction"),
        ("m", "3", "event3reaction", "event4reaction"),
    ]


async def test_a_later_hop_that_does_not_match_logs_the_runs_start_reaction() -> None:
    forward = step("go", "went", transition={"name": "$next", "input": "forward"})
    strict = {"name": "strict", **step("other", "never")}
    driver = Driver(pattern(starter(), forward, strict))
    t = await started(driver)
    output = await driver.send(event("g", "go", thredId=t))
    assert titles(output) == ["went"]
    assert log_rows(output) == [("m", "g", "Cond_1", "strict"), ("nm", "g", "Cond_1", None)]


async def test_the_local_input_of_an_expiry_starts_a_run_of_its_own() -> None:
    remember = step("start", "started", onTrue={"xpr": "$setLocal('first', $event)"})
    waiting = {
        "name": "waiting",
        **step("answer", "answered"),
        "expiry": {
            "interval": 10,
            "transition": {"name": "late", "input": "local", "localName": "first"},
        },
    }
    late = {"name": "late", **step("start", "late start")}
    driver = Driver(pattern(remember, waiting, late))
    t = await started(driver)
    driver.replay.clock.advance(11)
    output = await driver.send(event("a", "answer", thredId=t))
    # The expiry's local input (the stored start event) ran in "late", then the arriving event
    # found the thred ended.
    assert log_rows(output)[0] == ("m", "s", "late", None)
    assert titles(output) == ["late start"]


# --- §7: lastUpdateTime moves only on a reaction change or the end ------------------------------


def updating() -> dict[str, Any]:
    def either(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
        return {"type": "or", "operands": [first, second]}

    stay = either(
        {"type": "filter", "xpr": is_type("stay"), "transition": {"name": "$noTransition"}},
        {"type": "filter", "xpr": is_type("move"), "transition": {"name": "both"}},
    )
    both = {
        "type": "and",
        "operands": [
            {"type": "filter", "xpr": is_type("x")},
            {"type": "filter", "xpr": is_type("y")},
        ],
    }
    again = either(
        {"type": "filter", "xpr": is_type("again"), "transition": {"name": "again"}},
        {"type": "filter", "xpr": is_type("end"), "transition": {"name": "$terminate"}},
    )
    return pattern(
        starter(),
        {"name": "stay", "condition": stay},
        {"name": "both", "condition": both},
        {"name": "again", "condition": again},
        name="Upd",
    )


async def test_last_update_time_moves_only_on_a_reaction_change_or_the_end() -> None:
    driver = Driver(updating())
    t = await started(driver)
    assert only_thred(driver.outputs[-1])["lastUpdateTime"] == START_MS
    expected = [
        ("nothing", START_MS),  # no match
        ("stay", START_MS),  # $noTransition
        ("move", START_MS + 300),  # enters "both"
        ("x", START_MS + 300),  # the and still waits
        ("y", START_MS + 500),  # the and completes: $next enters "again"
        ("again", START_MS + 600),  # naming the current reaction re-enters it
    ]
    for event_type, last_update in expected:
        await driver.advance(100)
        output = await driver.send(event(event_type, event_type, thredId=t))
        assert only_thred(output)["lastUpdateTime"] == last_update, event_type
    await driver.advance(100)
    output = await driver.send(event("end", "end", thredId=t))
    [view] = output["archived"]
    assert view["lastUpdateTime"] == view["endTime"] == START_MS + 700


# --- §7: an ended thred has no current reaction; a broadcast leaves FINISHED threds FINISHED ----


async def test_an_ended_thred_has_no_current_reaction_in_its_public_view() -> None:
    driver = Driver(pattern(starter(), step("next", "bye"), broadcastAllowed=True))
    t = await started(driver)
    await driver.send(event("1", "next", thredId=t))
    thred = await driver.replay.storage.get_thred(t)
    assert thred is not None
    assert thred.status == "f"
    assert driver.replay.engine.public_view(thred)["currentReaction"] == {}


async def test_a_broadcast_to_a_finished_thred_is_delivered_and_leaves_it_finished() -> None:
    chat = broadcaster(broadcastAllowed=True)
    chat["reactions"][1]["condition"]["transition"] = {"name": "$next"}
    driver = Driver(chat)
    t = await started(driver)
    await driver.advance(100)
    ended = only_thred(await driver.send(tell("c", "participant1", t)))
    assert ended["status"] == "f"
    await driver.advance(100)
    output = await driver.send(shout("b", "participant0", t, message="still there?"))
    assert titles(output) == ["Message from participant0"]
    after = only_thred(output)
    assert after["status"] == "f"
    assert after["endTime"] == ended["endTime"]
    assert after["lastUpdateTime"] == ended["lastUpdateTime"]
    assert after["reactionStore"] == ended["reactionStore"]


# --- §8: the broadcast message is found like $valueNamed finds it; titles use the source id ----


async def test_a_broadcast_message_nested_in_values_is_found() -> None:
    driver = Driver(broadcaster(broadcastAllowed=True))
    t = await started(driver)
    line = shout("b", "participant0", t)
    line["data"]["content"]["values"] = {"envelope": [{"message": "nested"}]}
    output = await driver.send(line)
    assert titles(output) == ["Message from participant0"]


@pytest.mark.parametrize("falsy", [None, "", 0, False])
async def test_a_falsy_broadcast_message_is_refused(falsy: Any) -> None:
    driver = Driver(broadcaster(broadcastAllowed=True))
    t = await started(driver)
    output = await driver.send(shout("b", "participant0", t, message=falsy))
    assert error_of(output) == {
        "message": "Broadcast event b must have a 'message' value",
        "code": 4202,
    }


async def test_broadcast_and_echo_titles_name_the_source_by_id_never_by_name() -> None:
    driver = Driver(broadcaster(broadcastAllowed=True, echoResponses=True))
    t = await started(driver)
    line = shout("b", "participant0", t, message="hi")
    line["source"]["name"] = "Zoe"
    output = await driver.send(line)
    assert titles(output) == ["Message from participant0"]
    assert output["messages"][0]["event"]["data"]["content"]["values"]["messageSource"] == {
        "id": "participant0",
        "name": "Zoe",
    }
    line = tell("c", "participant1", t)
    line["source"]["name"] = "Yann"
    assert titles(await driver.send(line)) == ["Action by participant1", "ack"]


# --- decide, then commit: a failed processing sends nothing but its error -----------------------


async def test_a_later_hop_that_throws_sends_none_of_the_earlier_hops_messages() -> None:
    forward = step("go", "went", transition={"name": "$next", "input": "forward"})
    broken = {
        "name": "broken",
        "condition": {
            "type": "filter",
            "xpr": is_type("go"),
            "transform": {"eventDataTemplate": {"title": "$xpr( $error('boom') )"}},
            "publish": {"to": "out"},
        },
    }
    driver = Driver(pattern(starter(), forward, broken))
    t = await started(driver)
    before = only_thred(driver.outputs[-1])
    output = await driver.send(event("g", "go", thredId=t))
    # Only the error notification: the first hop's "went" was never committed, so never sent.
    assert error_of(output)["code"] == 5000
    assert only_thred(output) == before
