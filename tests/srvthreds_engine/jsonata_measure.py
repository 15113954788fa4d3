"""Measure the two JSONata candidates on the spec's expressions: correctness, then speed.

Run: .venv/bin/python -m tests.srvthreds_engine.jsonata_measure
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jsonata
import jsonatapy

EVENT: dict[str, Any] = {
    "id": "e1",
    "type": "inbound.event0",
    "re": "evtabc",
    "thredId": "t1",
    "source": {"id": "participant0"},
    "data": {"title": "T", "content": {"values": {"x": 5, "nested": {"name": "n"}}}},
}
SCOPE: dict[str, Any] = {"event1": {"id": "1"}, "out_id_ask": "evtabc"}

# (expression, expected result) - the constructs section 9 needs.
CASES: list[tuple[str, Any]] = [
    ("$event.type = 'inbound.event0'", True),
    ("$thredId", "t1"),
    ("$data.title & '!'", "T!"),
    ("$values.x > 3 and $content.values.x < 10", True),
    ("{'a': $event.id, 'b': [1, 2, $thredId]}", {"a": "e1", "b": [1, 2, "t1"]}),
    ("$contains($event.source.id, /PARTICIPANT\\d/i)", True),
    ("'response to event ' & $local('event1').id", "response to event 1"),
    ("$setLocal('k', $event.id)", "e1"),
    ("$isResponseFor('ask')", True),
    ("$valueNamed('name')", "n"),
]


def _host_functions(scope: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    def set_local(name: str, value: Any) -> Any:
        scope[name] = value
        return value

    return {
        "local": scope.get,
        "setLocal": set_local,
        "isResponseFor": lambda name: EVENT.get("re") == scope.get(f"out_id_{name}"),
        "valueNamed": lambda name, *_: {"x": 5, "name": "n"}.get(name),
    }


def _variables() -> dict[str, Any]:
    data = EVENT["data"]
    return {
        "event": EVENT,
        "thredId": EVENT["thredId"],
        "data": data,
        "content": data["content"],
        "values": data["content"]["values"],
    }


def run_jsonatapy(text: str) -> Callable[[], Any]:
    """A zero-argument evaluation with jsonatapy (compiled once)."""
    compiled = jsonatapy.compile(text)
    for name, function in _host_functions(dict(SCOPE)).items():
        compiled.register(name, function)
    document = {"event": EVENT, "context": {}}
    return lambda: compiled.evaluate(document, _variables())


def run_jsonata_python(text: str) -> Callable[[], Any]:
    """A zero-argument evaluation with jsonata-python (compiled once)."""
    compiled = jsonata.Jsonata(text)
    for name, function in _host_functions(dict(SCOPE)).items():
        compiled.register_lambda(name, function)
    document = {"event": EVENT, "context": {}}

    def evaluate() -> Any:
        frame = compiled.create_frame()
        for key, value in _variables().items():
            frame.bind(key, value)
        return compiled.evaluate(document, frame)

    return evaluate


def measure(factory: Callable[[str], Callable[[], Any]], *, rounds: int) -> None:
    """Print correctness and microseconds per evaluation for every case."""
    for text, expected in CASES:
        try:
            evaluate = factory(text)
            result = evaluate()
        except Exception as exc:
            print(f"  FAIL  {text!r}: {exc}")
            continue
        started = time.perf_counter()
        for _ in range(rounds):
            evaluate()
        micros = (time.perf_counter() - started) / rounds * 1e6
        verdict = "ok  " if result == expected else f"WRONG ({result!r})"
        print(f"  {verdict} {micros:8.1f} us  {text}")


def main() -> None:
    """Measure both candidates."""
    print("jsonatapy", jsonatapy.__version__)
    measure(run_jsonatapy, rounds=20_000)
    print("jsonata-python")
    measure(run_jsonata_python, rounds=2_000)


if __name__ == "__main__":
    main()
