"""The embedded mode's in-memory persistence keeps only the newest records."""

from __future__ import annotations

from srvthreds_engine.adapters.memory import BoundedMemoryPersistence


async def test_only_the_newest_records_of_each_kind_are_kept() -> None:
    persistence = BoundedMemoryPersistence(keep=3)
    for number in range(5):
        await persistence.save_event({"id": f"e{number}"}, thred_id="t1")
        await persistence.set_event_to(f"out{number}", to=["alice"])
        await persistence.add_log({"type": "m", "eventId": f"e{number}"})
        await persistence.archive_thred({"id": f"t{number}"})
        await persistence.add_archived_thred("alice", thred_id=f"t{number}")
    assert list(persistence.events) == ["out3", "e4", "out4"]
    assert [record["eventId"] for record in persistence.log] == ["e2", "e3", "e4"]
    assert [view["id"] for view in await persistence.archived_threds()] == ["t2", "t3", "t4"]
    assert persistence.user_archived["alice"] == ["t2", "t3", "t4"]
    assert [record["id"] for record in await persistence.events_for_thred("t1")] == ["e4"]
