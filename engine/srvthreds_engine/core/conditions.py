"""Condition trees: `test` for routing and `apply` with per-node state and `onTrue`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from srvthreds_engine.core.expressions import Bindings, compile_expression, is_truthy
from srvthreds_engine.core.patterns import (
    AndCondition,
    FilterCondition,
    OrCondition,
    Publish,
    Spawn,
    Transform,
    Transition,
)

Node = FilterCondition | AndCondition | OrCondition
ROOT_ID = "0"


@dataclass(slots=True)
class Directives:
    """What a matched condition tells the engine to do next."""

    transform: Transform | None = None
    publish: Publish | None = None
    transition: Transition | None = None
    spawn: Spawn | None = None

    @classmethod
    def of(cls, node: Node) -> Directives:
        """The node's own directives."""
        return cls(node.transform, node.publish, node.transition, node.spawn)

    def overridden_by(self, deeper: Directives) -> Directives:
        """Key by key, the deeper node's directive wins where it has one."""
        return replace(
            self,
            transform=deeper.transform or self.transform,
            publish=deeper.publish or self.publish,
            transition=deeper.transition or self.transition,
            spawn=deeper.spawn or self.spawn,
        )


@dataclass(slots=True)
class Match:
    """A condition that matched, with the directives to apply."""

    directives: Directives = field(default_factory=Directives)


def test_condition(node: Node, *, bindings: Bindings) -> bool:
    """Whether the event could match: filter = xpr, and/or = any operand; no side effects."""
    if isinstance(node, FilterCondition):
        expression = compile_expression(node.xpr)
        if expression.may_write_scope:
            # A throwaway scope keeps `$setLocal` in a filter from touching the thred.
            bindings = bindings.with_scope(dict(bindings.scope))
        return is_truthy(expression.evaluate(bindings))
    return any(test_condition(operand, bindings=bindings) for operand in node.operands)


def test_carries_over(node: Node) -> bool:
    """Whether a true `test` of `node` on an unbound event proves its filter true once rebound.

    True only for a filter whose expression has no side effect and reads nothing that
    rebinding changes (thred id, scope, context): evaluating it again would give the same.
    """
    return (
        isinstance(node, FilterCondition) and compile_expression(node.xpr).reads_event_content_only
    )


def apply_condition(
    node: Node,
    *,
    bindings: Bindings,
    state: dict[str, Any],
    node_id: str = ROOT_ID,
    known_true: bool = False,
) -> Match | None:
    """Apply the condition to an event, running `onTrue` and updating and-state in `state`.

    `known_true` (see `test_carries_over`) skips re-evaluating a root filter already proved true.
    """
    if isinstance(node, FilterCondition):
        match = Match(Directives.of(node)) if known_true else _apply_filter(node, bindings=bindings)
    elif isinstance(node, OrCondition):
        match = _apply_or(node, bindings=bindings, state=state, node_id=node_id)
    else:
        match = _apply_and(node, bindings=bindings, state=state, node_id=node_id)
    if match is not None and node.onTrue is not None:
        compile_expression(node.onTrue.xpr).evaluate(bindings)
    return match


def _apply_filter(node: FilterCondition, *, bindings: Bindings) -> Match | None:
    if is_truthy(compile_expression(node.xpr).evaluate(bindings)):
        return Match(Directives.of(node))
    return None


def _apply_or(
    node: OrCondition, *, bindings: Bindings, state: dict[str, Any], node_id: str
) -> Match | None:
    for index, operand in enumerate(node.operands):
        match = apply_condition(
            operand, bindings=bindings, state=state, node_id=f"{node_id}.{index}"
        )
        if match is not None:
            return Match(Directives.of(node).overridden_by(match.directives))
    return None


def _apply_and(
    node: AndCondition, *, bindings: Bindings, state: dict[str, Any], node_id: str
) -> Match | None:
    # Each node has its own slot (the original shared one between siblings).
    previous = state.get(node_id, {}).get("operandResults")
    results = list(previous) if previous else [False] * len(node.operands)
    for index, operand in enumerate(node.operands):
        if not results[index]:
            child_id = f"{node_id}.{index}"
            results[index] = (
                apply_condition(operand, bindings=bindings, state=state, node_id=child_id)
                is not None
            )
    if all(results):
        # A completed and starts over, so it does not fire again on every later event.
        state.pop(node_id, None)
        return Match(Directives.of(node))
    # Stored after every event applied to it, also one that matched no operand (section 4).
    state[node_id] = {"operandResults": results}
    return None
