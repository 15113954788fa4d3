"""Routing and lifecycle: unbound/bound events, limits, atomic creation, ending, archiving."""

from __future__ import annotations

from typing import Any

from tests.srvthreds_engine.driver import Driver, error_of, only_thred, titles
from tests.srvthreds_engine.test_conditions import event, is_type, pattern, say, started, starter


class RecordingObserver:
    def __init__(self) -> None:
        self.results: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.active: list[int] = []

    def event_processed(self, *, result: str, seconds: float) -> None:
        assert seconds >= 0
        self.results.append(result)

    def thred_creation_skipped(self, *, pattern_id: str, reason: str) -> None:
        self.skipped.append((pattern_id, reason))

    def threds_changed(self, *, active: int) -> None:
        self.active.append(active)


def observed(driver: Driver) -> RecordingObserver:
    observer = RecordingObserver()
    driver.replay.engine.observer = observer
    return observer


def step(event_type: str, title: str, **fields: Any) -> dict[str, Any]:
    return {"condition": {"type": "filter", "xpr": is_type(event_type), **say(title)}, **fields}


async def test_unbound_event_is_rebound_and_persisted_with_the_new_thred() -> None:
    driver = Driver(pattern(starter(), step("next", "n")))
    t = await started(driver)
    record = driver.replay.persistence.events["s"]
    assert record["thredId"] == t
    assert record["event"]["thredId"] == t


async def test_observer_sees_each_result() -> None:
    driver = Driver(pattern(starter(), step("next", "n")))
    observer = observed(driver)
    t = await started(driver)
    await driver.send(event("1", "other", thredId=t))
    await driver.send(event("2", "other"))
    await driver.send(event("3", "next", thredId="missing"))
    await driver.send(event("4", "next", thredId=t))
    assert observer.results == ["matched", "no_match", "no_match", "no_thred", "matched"]
    assert observer.active == [1, 0]


async def test_allow_unbound_events_reaches_waiting_threds_once() -> None:
    waiting = {
        "allowUnboundEvents": True,
        "condition": {
            "type": "filter",
            "xpr": is_type("news"),
            **say("heard"),
            "transition": {"name": "$noTransition"},
        },
    }
    driver = Driver(pattern(starter(), waiting))
    t = await started(driver)
    output = await driver.send(event("n1", "news"))
    assert titles(output) == ["heard"]
    assert output["messages"][0]["event"]["thredId"] == t
    # Not rebound, not persisted with the thred (as in the original).
    assert "n1" not in driver.replay.persistence.events


async def test_a_thred_created_by_an_unbound_event_does_not_get_it_twice() -> None:
    # The original handed the new thred the same event again as an unbound event.
    first = {"condition": {"type": "filter", "xpr": is_type("news"), **say("created")}}
    waiting = {
        "allowUnboundEvents": True,
        "condition": {"type": "filter", "xpr": is_type("news"), **say("again")},
    }
    driver = Driver(pattern(first, waiting))
    output = await driver.send(event("n1", "news"))
    assert titles(output) == ["created"]
    output = await driver.send(event("n2", "news"))
    assert sorted(titles(output)) == ["again", "created"]


async def test_max_instances_skips_silently_and_tells_the_observer() -> None:
    driver = Driver(pattern(starter(), step("next", "n"), maxInstances=1, name="Limited"))
    observer = observed(driver)
    await started(driver)
    output = await driver.send(event("s2", "start"))
    assert output["messages"] == []
    assert len(output["threds"]) == 1
    assert observer.skipped == [("limited", "max_instances")]
    assert observer.results[-1] == "matched"


async def test_instance_interval_skips_until_the_interval_passed() -> None:
    driver = Driver(pattern(starter(), step("next", "n"), instanceInterval=1000, name="Paced"))
    observer = observed(driver)
    await started(driver)
    assert (await driver.send(event("s2", "start")))["messages"] == []
    await driver.advance(999)
    assert (await driver.send(event("s3", "start")))["messages"] == []
    await driver.advance(1)
    assert titles(await driver.send(event("s4", "start"))) == ["started"]
    assert observer.skipped == [("paced", "instance_interval")] * 2


async def test_ended_thred_frees_its_instance_slot() -> None:
    driver = Driver(pattern(starter(), step("next", "n"), maxInstances=1))
    t = await started(driver)
    await driver.send(event("1", "next", thredId=t))
    assert titles(await driver.send(event("s2", "start"))) == ["started"]


async def test_failed_creation_leaves_no_thred_and_no_count() -> None:
    # The original stored the thred before applying the event and left it behind.
    broken = {
        "condition": {
            "type": "filter",
            "xpr": is_type("start"),
            "transform": {"eventDataTemplate": {"title": "$xpr( $error('boom') )"}},
            "publish": {"to": "x"},
        }
    }
    driver = Driver(pattern(broken, step("next", "n"), maxInstances=1, name="Broken"))
    output = await driver.send(event("s", "start"))
    error = error_of(output)
    assert error["code"] == 5000
    assert error["message"] == "Error applying pattern broken to event s of type start"
    assert "boom" in error["cause"]
    assert output["threds"] == []
    counters = await driver.replay.storage.get_counters("broken")
    assert counters.instances == 0
    assert counters.last_instance_ms is None


async def test_several_failing_patterns_are_reported_together() -> None:
    broken = {
        "condition": {
            "type": "filter",
            "xpr": is_type("start"),
            "onTrue": {"xpr": "$error('boom')"},
        }
    }
    driver = Driver(pattern(broken, name="One"), pattern(broken, name="Two"))
    error = error_of(await driver.send(event("s", "start")))
    assert error["message"] == "Server Error"
    assert [cause["message"] for cause in error["cause"]] == [
        "Error applying pattern one to event s of type start",
        "Error applying pattern two to event s of type start",
    ]


async def test_bound_failure_sends_server_error_and_does_not_save() -> None:
    second = {
        "condition": {
            "type": "filter",
            "xpr": is_type("next"),
            "onTrue": {"xpr": "$setLocal('x', 1)"},
            "transform": {"templateXpr": "$error('bad')"},
            "publish": {"to": "x"},
        }
    }
    driver = Driver(pattern(starter(), second))
    t = await started(driver)
    output = await driver.send(event("1", "next", thredId=t))
    error = error_of(output)
    assert error["message"] == "Server Error"
    assert error["code"] == 5000
    thred = only_thred(output)
    assert thred["thredContext"]["scope"] == {}
    assert thred["reactionStore"]["reactionName"] == "Cond_1"
    assert driver.replay.persistence.events["1"]["error"]["code"] == 5000


async def test_error_carried_in_an_event_is_passed_to_the_thred() -> None:
    driver = Driver(pattern(starter(), step("next", "n")))
    t = await started(driver)
    carried = {"content": {"error": {"message": "agent failed", "code": 5200}}}
    output = await driver.send(event("e", "org.wt.tell", source="agent", thredId=t, data=carried))
    assert error_of(output) == {"message": "agent failed", "code": 5200}
    assert set(output["messages"][0]["to"]) == {"out", "test.dataset"}
    assert only_thred(output)["reactionStore"]["reactionName"] == "Cond_1"


async def test_errors_are_not_sent_to_service_addresses() -> None:
    driver = Driver(pattern(starter()))
    output = await driver.send(event("1", "x", source="test_agent", thredId="gone"))
    assert output["messages"] == []
    assert driver.replay.persistence.events["1"]["error"]["code"] == 5203


async def test_end_of_reactions_terminates_archives_and_cleans_indexes() -> None:
    driver = Driver(pattern(starter(), step("next", "bye")))
    t = await started(driver)
    output = await driver.send(event("1", "next", thredId=t))
    assert titles(output) == ["bye"]
    [view] = output["archived"]
    assert view["patternName"] == "Cond"
    assert view["broadcastAllowed"] is False
    # An ended thred has no current reaction (section 7).
    assert view["currentReaction"] == {}
    assert view["meta"]["label"] == "Cond"
    assert "thredContext" not in view
    assert "reactionStore" not in view
    storage = driver.replay.storage
    assert await storage.participant_thred_ids("test.dataset") == []
    assert driver.replay.persistence.user_archived["test.dataset"] == [t]


async def test_broadcast_pattern_ends_finished_and_restarts_at_the_first_reaction() -> None:
    driver = Driver(pattern(starter(), step("next", "bye"), broadcastAllowed=True))
    t = await started(driver)
    output = await driver.send(event("1", "next", thredId=t))
    thred = only_thred(output)
    assert thred["status"] == "f"
    assert output["archived"] == []
    output = await driver.send(event("2", "start", thredId=t))
    assert titles(output) == ["started"]
    assert only_thred(output)["status"] == "a"


async def test_meta_comes_from_the_input_data() -> None:
    driver = Driver(pattern(starter(), step("next", "n")))
    t = await started(driver)
    data = {"title": "Laptop", "description": "for Alice", "display": {"uri": "http://x"}}
    await driver.send(event("1", "other", thredId=t))
    thred = await driver.replay.storage.get_thred(t)
    assert thred is not None
    assert thred.meta.label == "Cond"
    assert thred.meta.description == "start"
    driver2 = Driver(pattern(starter(), step("next", "n")))
    await driver2.send(event("s", "start", data=data))
    [stored] = await driver2.replay.storage.list_threds()
    assert stored.meta.to_dict() == {
        "label": "Laptop",
        "description": "for Alice",
        "displayUri": "http://x",
    }
