"""Reactions: allowedSources, permissions, filter/and/or with state, onTrue order."""

from __future__ import annotations

from typing import Any

from tests.srvthreds_engine.driver import Driver, only_thred, titles


def is_type(event_type: str) -> str:
    return f"$event.type = '{event_type}'"


def say(title: str, to: str = "out") -> dict[str, Any]:
    return {"transform": {"eventDataTemplate": {"title": title}}, "publish": {"to": [to]}}


def pattern(*reactions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": fields.pop("name", "Cond"), "reactions": list(reactions), **fields}


def starter(**fields: Any) -> dict[str, Any]:
    return {"condition": {"type": "filter", "xpr": is_type("start"), **say("started")}, **fields}


def event(
    event_id: str, event_type: str, *, source: str = "test.dataset", **fields: Any
) -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "source": {"id": source}, **fields}


async def started(driver: Driver, *, source: str = "test.dataset") -> str:
    output = await driver.send(event("s", "start", source=source))
    assert titles(output) == ["started"], output
    return str(only_thred(output)["id"])


async def test_allowed_sources_exact_group_and_regex() -> None:
    driver = Driver(pattern(starter(allowedSources=["alice", "$group1", "/^ROBOT-\\d+$/"])))
    assert titles(await driver.send(event("1", "start", source="alice"))) == ["started"]
    assert titles(await driver.send(event("2", "start", source="participant3"))) == ["started"]
    assert titles(await driver.send(event("3", "start", source="robot-17"))) == ["started"]
    for number, source in enumerate(["bob", "participant0", "my-robot-1", "alic"]):
        output = await driver.send(event(f"n{number}", "start", source=source))
        assert output["messages"] == [], f"{source} must not match"


async def test_allowed_sources_failure_is_a_silent_non_match_on_a_bound_thred() -> None:
    second = {
        "allowedSources": "$group0",
        "condition": {"type": "filter", "xpr": is_type("go"), **say("went")},
    }
    driver = Driver(pattern(starter(), second))
    t = await started(driver)
    output = await driver.send(event("1", "go", source="stranger", thredId=t))
    assert output["messages"] == []
    assert output["log"][0]["type"] == "nm"
    assert titles(await driver.send(event("2", "go", source="participant1", thredId=t))) == ["went"]


async def test_permissions_allowed_roles_are_enforced() -> None:
    # The original ignored permissions; a reaction's allowedRoles is checked here.
    driver = Driver(pattern(starter(permissions={"allowedRoles": ["buyer"]})))
    assert (await driver.send(event("1", "start", source="alice")))["messages"] == []
    await driver.session("alice", roles=["viewer"])
    assert (await driver.send(event("2", "start", source="alice")))["messages"] == []
    await driver.session("alice", roles=["buyer"])
    assert titles(await driver.send(event("3", "start", source="alice"))) == ["started"]


async def test_on_true_runs_matched_operand_first_then_parent() -> None:
    condition = {
        "type": "or",
        "onTrue": {"xpr": "$setLocal('order', $append($local('order'), 'parent'))"},
        "operands": [
            {"type": "filter", "xpr": "false", "onTrue": {"xpr": "$setLocal('order', ['never'])"}},
            {
                "type": "filter",
                "xpr": is_type("start"),
                "onTrue": {"xpr": "$setLocal('order', ['operand'])"},
            },
        ],
        **say("started"),
        "transition": {"name": "$noTransition"},
    }
    driver = Driver(pattern({"condition": condition}))
    output = await driver.send(event("1", "start"))
    assert only_thred(output)["thredContext"]["scope"]["order"] == ["operand", "parent"]


async def test_one_event_may_satisfy_several_and_operands() -> None:
    condition = {
        "type": "and",
        "operands": [
            {"type": "filter", "xpr": "$valueNamed('a') = 1"},
            {"type": "filter", "xpr": "$valueNamed('b') = 2"},
        ],
        **say("both"),
    }
    driver = Driver(pattern(starter(), {"condition": condition}))
    t = await started(driver)
    output = await driver.send(
        event("1", "x", thredId=t, data={"content": {"values": {"a": 1, "b": 2}}})
    )
    assert titles(output) == ["both"]


async def test_and_uses_only_its_own_directives() -> None:
    condition = {
        "type": "and",
        "operands": [
            {"type": "filter", "xpr": is_type("a"), **say("operand a")},
            {"type": "filter", "xpr": is_type("b"), "transition": {"name": "$terminate"}},
        ],
        **say("and fired"),
    }
    driver = Driver(
        pattern(
            starter(), {"condition": condition}, {"condition": {"type": "filter", "xpr": "true"}}
        )
    )
    t = await started(driver)
    assert (await driver.send(event("1", "a", thredId=t)))["messages"] == []
    output = await driver.send(event("2", "b", thredId=t))
    assert titles(output) == ["and fired"]
    assert only_thred(output)["reactionStore"]["reactionName"] == "Cond_2"


async def test_sibling_and_nodes_keep_separate_state() -> None:
    # The original gave sibling nodes one shared id and so one state slot.
    left = {
        "type": "and",
        "operands": [
            {"type": "filter", "xpr": is_type("a")},
            {"type": "filter", "xpr": is_type("b")},
        ],
    }
    right = {
        "type": "and",
        "operands": [
            {"type": "filter", "xpr": is_type("c")},
            {"type": "filter", "xpr": is_type("d")},
        ],
    }
    condition = {"type": "or", "operands": [left, right], **say("pair")}
    driver = Driver(pattern(starter(), {"condition": condition}))
    t = await started(driver)
    await driver.send(event("1", "a", thredId=t))
    output = await driver.send(event("2", "c", thredId=t))
    assert output["messages"] == []
    assert only_thred(output)["reactionStore"]["conditionState"] == {
        "0.0": {"operandResults": [True, False]},
        "0.1": {"operandResults": [True, False]},
    }
    assert titles(await driver.send(event("3", "d", thredId=t))) == ["pair"]


async def test_completed_and_resets_even_with_no_transition() -> None:
    # The original kept a completed and-state, so it fired on every later event.
    condition = {
        "type": "and",
        "operands": [
            {"type": "filter", "xpr": is_type("a")},
            {"type": "filter", "xpr": is_type("b")},
        ],
        **say("pair"),
        "transition": {"name": "$noTransition"},
    }
    driver = Driver(pattern(starter(), {"condition": condition}))
    t = await started(driver)
    await driver.send(event("1", "a", thredId=t))
    assert titles(await driver.send(event("2", "b", thredId=t))) == ["pair"]
    assert (await driver.send(event("3", "x", thredId=t)))["messages"] == []
    await driver.send(event("4", "b", thredId=t))
    assert titles(await driver.send(event("5", "a", thredId=t))) == ["pair"]


async def test_no_transition_keeps_state_and_naming_itself_resets_it() -> None:
    keep = {
        "name": "keep",
        "condition": {
            "type": "or",
            "operands": [
                {
                    "type": "and",
                    "operands": [
                        {"type": "filter", "xpr": is_type("a")},
                        {"type": "filter", "xpr": is_type("never")},
                    ],
                },
                {"type": "filter", "xpr": is_type("stay"), "transition": {"name": "$noTransition"}},
                {"type": "filter", "xpr": is_type("self"), "transition": {"name": "keep"}},
            ],
        },
    }
    driver = Driver(pattern(starter(), keep))
    t = await started(driver)
    await driver.send(event("1", "a", thredId=t))
    output = await driver.send(event("2", "stay", thredId=t))
    assert only_thred(output)["reactionStore"]["conditionState"] == {
        "0.0": {"operandResults": [True, False]}
    }
    output = await driver.send(event("3", "self", thredId=t))
    assert only_thred(output)["reactionStore"]["conditionState"] == {}


async def test_initial_reaction_is_tested_before_creation_without_side_effects() -> None:
    condition = {
        "type": "filter",
        "xpr": "$setLocal('seen', $count($local('seen')) + 1) > 0",
        **say("made"),
    }
    driver = Driver(
        pattern(
            {"condition": condition, "name": "only"},
            {"condition": {"type": "filter", "xpr": "true"}},
        )
    )
    output = await driver.send(event("1", "any"))
    assert titles(output) == ["made"]
    assert only_thred(output)["thredContext"]["scope"]["seen"] == 1
