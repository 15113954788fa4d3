"""sysControl operations act or answer why they cannot: reloads, shutdown, terminatedMatcher."""

from __future__ import annotations

from typing import Any

from srvthreds_engine.core.errors import PatternError
from srvthreds_engine.core.patterns import Pattern, parse_pattern
from tests.srvthreds_engine.driver import Driver, error_of, titles
from tests.srvthreds_engine.test_conditions import event, is_type, pattern, say, started, starter
from tests.srvthreds_engine.test_system_events import admin_driver, control, reply


def greeter(pattern_id: str, *, title: str, event_type: str = "start") -> Pattern:
    document = pattern(
        {"condition": {"type": "filter", "xpr": is_type(event_type), **say(title)}},
        name=pattern_id,
    )
    return parse_pattern(document, file=f"{pattern_id}.json")


async def two_pattern_driver() -> Driver:
    driver = Driver(
        pattern(
            {"condition": {"type": "filter", "xpr": is_type("a"), **say("a v1")}}, name="alpha"
        ),
        pattern({"condition": {"type": "filter", "xpr": is_type("b"), **say("b v1")}}, name="beta"),
    )
    await driver.session("root", roles=["admin"])
    return driver


def fails_with(error: PatternError) -> Any:
    async def loader() -> list[Pattern]:
        raise error

    return loader


def reading(*patterns: Pattern) -> Any:
    """A pattern loader that reads `patterns` (what a reload would find in the folder)."""

    async def loader() -> list[Pattern]:
        return list(patterns)

    return loader


async def test_reload_all_patterns_swaps_in_what_the_loader_reads() -> None:
    driver = await two_pattern_driver()
    driver.replay.engine.pattern_loader = reading(
        greeter("alpha", title="a v2", event_type="a"),
        greeter("gamma", title="c v1", event_type="c"),
    )
    output = await driver.send(control("sysControl", "root", op="reloadAllPatterns"))
    assert reply(output) == {
        "status": "OK",
        "op": "reloadAllPatterns",
        "patternIds": ["alpha", "gamma"],
    }
    assert titles(await driver.send(event("1", "a"))) == ["a v2"]
    assert titles(await driver.send(event("2", "c"))) == ["c v1"]
    # beta is gone from the folder, so from the engine.
    assert titles(await driver.send(event("3", "b"))) == []


async def test_reload_pattern_replaces_only_that_pattern() -> None:
    driver = await two_pattern_driver()
    driver.replay.engine.pattern_loader = reading(
        greeter("alpha", title="a v2", event_type="a"),
        greeter("beta", title="b v2", event_type="b"),
    )
    output = await driver.send(control("sysControl", "root", op="reloadPattern", patternId="beta"))
    assert reply(output) == {"status": "OK", "op": "reloadPattern", "patternId": "beta"}
    assert titles(await driver.send(event("1", "a"))) == ["a v1"]
    assert titles(await driver.send(event("2", "b"))) == ["b v2"]


async def test_reload_pattern_of_an_id_the_folder_lacks_is_5201() -> None:
    driver = await two_pattern_driver()
    driver.replay.engine.pattern_loader = reading(greeter("alpha", title="a v2", event_type="a"))
    output = await driver.send(control("sysControl", "root", op="reloadPattern", patternId="beta"))
    assert error_of(output) == {
        "message": "Pattern beta not found in the pattern folder",
        "code": 5201,
    }
    assert titles(await driver.send(event("1", "b"))) == ["b v1"]
    assert titles(await driver.send(event("2", "a"))) == ["a v1"]


async def test_reload_pattern_without_a_pattern_id_is_4202() -> None:
    driver = await two_pattern_driver()
    assert error_of(await driver.send(control("sysControl", "root", op="reloadPattern"))) == {
        "message": "No patternId supplied for reloadPattern operation",
        "code": 4202,
    }


async def test_an_invalid_pattern_folder_keeps_the_old_patterns_and_names_file_and_path() -> None:
    driver = await two_pattern_driver()
    problem = PatternError(
        "patterns/alpha.json", json_path="reactions[0].transition.name", problem="no such reaction"
    )
    driver.replay.engine.pattern_loader = fails_with(problem)
    for op, extra in (("reloadAllPatterns", {}), ("reloadPattern", {"patternId": "alpha"})):
        error = error_of(await driver.send(control("sysControl", "root", op=op, **extra)))
        assert error == {
            "message": f"{op} refused, the loaded patterns are unchanged: "
            "patterns/alpha.json: reactions[0].transition.name: no such reaction",
            "code": 5000,
            "cause": {
                "file": "patterns/alpha.json",
                "jsonPath": "reactions[0].transition.name",
                "problem": "no such reaction",
            },
        }
    assert titles(await driver.send(event("1", "a"))) == ["a v1"]
    assert titles(await driver.send(event("2", "b"))) == ["b v1"]


async def test_reload_under_replay_says_there_is_no_pattern_folder() -> None:
    driver = await two_pattern_driver()
    for op, extra in (("reloadAllPatterns", {}), ("reloadPattern", {"patternId": "alpha"})):
        error = error_of(await driver.send(control("sysControl", "root", op=op, **extra)))
        assert error == {
            "message": f"{op} needs a pattern folder to re-read and this engine has none "
            "(replay loads its patterns once, from --patterns); the loaded patterns are unchanged",
            "code": 5000,
        }
    assert titles(await driver.send(event("1", "a"))) == ["a v1"]


async def test_shutdown_under_replay_says_there_is_no_server_to_stop() -> None:
    driver = await admin_driver()
    assert error_of(await driver.send(control("sysControl", "root", op="shutdown", delay=0))) == {
        "message": "shutdown needs a server process to stop and this engine runs without one "
        "(replay)",
        "code": 5000,
    }


async def test_shutdown_delay_defaults_to_zero_and_must_be_a_non_negative_number() -> None:
    driver = await admin_driver()
    delays: list[int] = []
    driver.replay.engine.shutdown_requested = delays.append
    assert reply(await driver.send(control("sysControl", "root", op="shutdown")))["delay"] == 0
    for bad in (-1, "soon", True):
        error = error_of(await driver.send(control("sysControl", "root", op="shutdown", delay=bad)))
        assert error == {
            "message": f"shutdown delay must be a non-negative number of milliseconds, not {bad!r}",
            "code": 4200,
        }
    assert delays == [0]


# --- getThreds terminatedMatcher ----------------------------------------------------------------


async def archive_three() -> tuple[Driver, dict[str, str]]:
    """Threds of patterns `cond` (two) and `other` (one), all terminated by an admin.

    Returns the driver and the pattern id of each archived thred id.
    """
    driver = Driver(
        pattern(starter(), {"condition": {"type": "filter", "xpr": "false"}}),
        pattern(
            {"condition": {"type": "filter", "xpr": is_type("other"), **say("other")}},
            {"condition": {"type": "filter", "xpr": "false"}},
            name="other",
        ),
    )
    await driver.session("root", roles=["admin"])
    await started(driver)
    await driver.send(event("s2", "start"))
    output = await driver.send(event("o1", "other"))
    patterns = {thred["id"]: thred["patternId"] for thred in output["threds"]}
    assert sorted(patterns.values()) == ["cond", "cond", "other"]
    output = await driver.send(control("sysControl", "root", op="terminateAllThreds"))
    assert len(output["archived"]) == 3
    return driver, patterns


async def terminated(driver: Driver, matcher: Any, *, status: str = "terminated") -> list[str]:
    output = await driver.send(
        control("sysControl", "root", op="getThreds", status=status, terminatedMatcher=matcher)
    )
    return sorted(view["id"] for view in reply(output)["threds"])


async def test_terminated_matcher_selects_archived_threds_by_pattern() -> None:
    driver, patterns = await archive_three()
    others = [thred_id for thred_id, pattern_id in patterns.items() if pattern_id == "other"]
    conds = sorted(thred_id for thred_id, pattern_id in patterns.items() if pattern_id == "cond")
    assert await terminated(driver, {"thred.patternId": "other"}) == others
    assert await terminated(driver, {"thred.patternId": {"$ne": "other"}}) == conds


async def test_terminated_matcher_selects_archived_threds_by_id() -> None:
    driver, patterns = await archive_three()
    ids = sorted(patterns)
    assert await terminated(driver, {"id": {"$in": ids[:2]}}) == ids[:2]
    assert await terminated(driver, {"id": {"$nin": ids[:2]}}) == ids[2:]


async def test_no_terminated_matcher_lists_every_archived_thred() -> None:
    driver, patterns = await archive_three()
    assert await terminated(driver, None) == sorted(patterns)


async def test_terminated_matcher_leaves_active_threds_alone() -> None:
    driver, patterns = await archive_three()
    live = await started(driver)
    others = [thred_id for thred_id, pattern_id in patterns.items() if pattern_id == "other"]
    assert await terminated(driver, {"thred.patternId": "other"}, status="all") == sorted(
        [live, *others]
    )


async def test_terminated_matcher_with_an_unknown_operator_is_4200() -> None:
    driver, _ = await archive_three()
    output = await driver.send(
        control(
            "sysControl",
            "root",
            op="getThreds",
            status="terminated",
            terminatedMatcher={"thred.patternId": {"$regex": "^c"}},
        )
    )
    assert error_of(output) == {
        "message": "Invalid matcher for getThreds: terminatedMatcher.thred.patternId.$regex: "
        "unknown operator $regex (supported: $gt, $gte, $in, $lt, $lte, $ne, $nin, $not, "
        "$or, $re)",
        "code": 4200,
    }


async def test_terminated_matcher_must_be_an_object() -> None:
    driver, _ = await archive_three()
    output = await driver.send(
        control("sysControl", "root", op="getThreds", status="terminated", terminatedMatcher="x")
    )
    assert error_of(output) == {
        "message": "Invalid matcher for getThreds: terminatedMatcher: a matcher must be an "
        "object, not a string",
        "code": 4200,
    }
