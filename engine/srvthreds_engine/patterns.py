"""Pydantic models of patterns (the original JSON shapes) and the validating loader."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from srvthreds_engine.errors import PatternError
from srvthreds_engine.expressions import ExpressionError, compile_expression

NEXT = "$next"
TERMINATE = "$terminate"
NO_TRANSITION = "$noTransition"
SPECIAL_TRANSITIONS = frozenset({NEXT, TERMINATE, NO_TRANSITION})
XPR_PREFIX = "$xpr("
XPR_KEY = "$xpr"

Input = Literal["default", "forward", "local"]


class _Model(pydantic.BaseModel):
    # The original tolerates extra keys (descriptions, editor hints): keep them.
    model_config = pydantic.ConfigDict(extra="allow", populate_by_name=True)


class Xpr(_Model):
    """A JSONata expression holder (`onTrue`, `onPublish`)."""

    xpr: str


class TransformMeta(_Model):
    """Transform extras: `reXpr` computes the outbound `re`."""

    reXpr: str | None = None  # noqa: N815 - the pattern key


class Transform(_Model):
    """Builds the outbound event's `data`."""

    eventDataTemplate: dict[str, Any] | None = None  # noqa: N815
    templateXpr: str | None = None  # noqa: N815
    meta: TransformMeta | None = None


class Publish(_Model):
    """Where the built event goes."""

    to: str | list[Any] = pydantic.Field(default_factory=list)
    name: str | None = None
    onPublish: Xpr | None = None  # noqa: N815


class Transition(_Model):
    """The next reaction and the input it gets."""

    name: str = NEXT
    input: Input = "default"
    localName: str | None = None  # noqa: N815


class Spawn(_Model):
    """Threds to start from this reaction."""

    names: list[str] = pydantic.Field(min_length=1)
    input: Input = "default"
    type: Literal["child", "sibling"] = "child"
    localName: str | None = None  # noqa: N815
    context: bool = False


class _Node(_Model):
    onTrue: Xpr | None = None  # noqa: N815
    transform: Transform | None = None
    publish: Publish | None = None
    transition: Transition | None = None
    spawn: Spawn | None = None


class FilterCondition(_Node):
    """Matches when `xpr` is truthy."""

    type: Literal["filter"]
    xpr: str


class AndCondition(_Node):
    """Matches once every operand has matched (over one or several events)."""

    type: Literal["and"]
    operands: list[Condition] = pydantic.Field(min_length=1)


class OrCondition(_Node):
    """Matches on the first matching operand; its directives override this node's."""

    type: Literal["or"]
    operands: list[Condition] = pydantic.Field(min_length=1)


Condition = Annotated[
    FilterCondition | AndCondition | OrCondition, pydantic.Field(discriminator="type")
]


class Permissions(_Model):
    """Roles a source needs for a reaction to apply."""

    allowedRoles: list[str] = pydantic.Field(default_factory=list)  # noqa: N815


class Expiry(_Model):
    """Leave the reaction after `interval` ms without a match."""

    interval: int = pydantic.Field(ge=0)
    transition: Transition | None = None


class Reaction(_Model):
    """One state of a pattern."""

    name: str | None = None
    description: str | None = None
    condition: Condition
    allowedSources: str | list[str] | None = None  # noqa: N815
    allowUnboundEvents: bool = False  # noqa: N815
    permissions: Permissions | None = None
    expiry: Expiry | None = None


class PatternMeta(_Model):
    """Pattern metadata."""

    active: bool | None = None


class Pattern(_Model):
    """A pattern: named reactions, the first of which starts a thred."""

    name: str = pydantic.Field(min_length=1)
    id: str | None = None
    description: str | None = None
    reactions: list[Reaction] = pydantic.Field(min_length=1)
    maxInstances: int = pydantic.Field(default=0, ge=0)  # noqa: N815
    instanceInterval: int = pydantic.Field(default=0, ge=0)  # noqa: N815
    broadcastAllowed: bool = False  # noqa: N815
    echoResponses: bool = False  # noqa: N815
    meta: PatternMeta | None = None

    @functools.cached_property
    def pattern_id(self) -> str:
        """`id`, else the name with spaces as `_`, lowercased."""
        return self.id if self.id else self.name.replace(" ", "_").lower()

    @functools.cached_property
    def reaction_names(self) -> list[str]:
        """Each reaction's name (`name` or `<pattern name>_<index>`), in order."""
        return [
            reaction.name or f"{self.name}_{index}" for index, reaction in enumerate(self.reactions)
        ]

    @functools.cached_property
    def _reaction_indexes(self) -> dict[str, int]:
        # First occurrence wins; duplicates are refused on load anyway.
        indexes: dict[str, int] = {}
        for index, name in enumerate(self.reaction_names):
            indexes.setdefault(name, index)
        return indexes

    def reaction_index(self, name: str) -> int | None:
        """The index of the reaction called `name`, or None."""
        return self._reaction_indexes.get(name)


def schema() -> dict[str, Any]:
    """The JSON Schema of a pattern file's pattern object."""
    return Pattern.model_json_schema()


# --- validation beyond the shape -------------------------------------------------------------


def template_expressions(template: Any, *, path: str) -> Iterator[tuple[str, str]]:
    """Every `$xpr(...)` text of a template with its JSON path."""
    if isinstance(template, str):
        if template.startswith(XPR_PREFIX) and template.endswith(")"):
            yield path, template[len(XPR_PREFIX) : -1]
    elif isinstance(template, list):
        for index, item in enumerate(template):
            yield from template_expressions(item, path=f"{path}[{index}]")
    elif isinstance(template, dict):
        for key, value in template.items():
            yield from template_expressions(value, path=f"{path}.{key}")


def _node_expressions(
    node: FilterCondition | AndCondition | OrCondition, *, path: str
) -> Iterator[tuple[str, str]]:
    if isinstance(node, FilterCondition):
        yield f"{path}.xpr", node.xpr
    else:
        for index, operand in enumerate(node.operands):
            yield from _node_expressions(operand, path=f"{path}.operands[{index}]")
    if node.onTrue is not None:
        yield f"{path}.onTrue.xpr", node.onTrue.xpr
    yield from _directive_expressions(node, path=path)


def _directive_expressions(node: _Node, *, path: str) -> Iterator[tuple[str, str]]:
    if node.transform is not None:
        transform = node.transform
        if transform.eventDataTemplate is not None:
            yield from template_expressions(
                transform.eventDataTemplate, path=f"{path}.transform.eventDataTemplate"
            )
        if transform.templateXpr is not None:
            yield f"{path}.transform.templateXpr", transform.templateXpr
        if transform.meta is not None and transform.meta.reXpr is not None:
            yield f"{path}.transform.meta.reXpr", transform.meta.reXpr
    if node.publish is not None:
        yield from template_expressions(node.publish.to, path=f"{path}.publish.to")
        if node.publish.onPublish is not None:
            yield f"{path}.publish.onPublish.xpr", node.publish.onPublish.xpr


def _nodes(
    node: FilterCondition | AndCondition | OrCondition, *, path: str
) -> Iterator[tuple[str, _Node]]:
    yield path, node
    if not isinstance(node, FilterCondition):
        for index, operand in enumerate(node.operands):
            yield from _nodes(operand, path=f"{path}.operands[{index}]")


def _check_transition(
    transition: Transition, *, pattern: Pattern, path: str
) -> Iterator[tuple[str, str]]:
    if (
        transition.name not in SPECIAL_TRANSITIONS
        and pattern.reaction_index(transition.name) is None
    ):
        yield f"{path}.name", f"unknown transition target {transition.name!r}"
    if transition.input == "local" and not transition.localName:
        yield f"{path}.localName", "input 'local' needs a localName"


def _check_reaction(
    reaction: Reaction, *, pattern: Pattern, path: str
) -> Iterator[tuple[str, str]]:
    for node_path, node in _nodes(reaction.condition, path=f"{path}.condition"):
        if node.transition is not None:
            yield from _check_transition(
                node.transition, pattern=pattern, path=f"{node_path}.transition"
            )
        if node.spawn is not None and node.spawn.input == "local" and not node.spawn.localName:
            yield f"{node_path}.spawn.localName", "input 'local' needs a localName"
        if node.transform is not None and not _has_template(node.transform):
            yield f"{node_path}.transform", "needs eventDataTemplate or templateXpr"
    if reaction.expiry is not None and reaction.expiry.transition is not None:
        yield from _check_transition(
            reaction.expiry.transition, pattern=pattern, path=f"{path}.expiry.transition"
        )


def _has_template(transform: Transform) -> bool:
    return transform.eventDataTemplate is not None or transform.templateXpr is not None


def pattern_problems(pattern: Pattern) -> Iterator[tuple[str, str]]:
    """(JSON path, problem) for everything that would make the pattern fail at run time."""
    seen: dict[str, int] = {}
    for index, name in enumerate(pattern.reaction_names):
        if name in seen:
            yield f"reactions[{index}].name", f"duplicate reaction name {name!r}"
        seen.setdefault(name, index)
    for index, reaction in enumerate(pattern.reactions):
        path = f"reactions[{index}]"
        yield from _check_reaction(reaction, pattern=pattern, path=path)
        for xpr_path, text in _node_expressions(reaction.condition, path=f"{path}.condition"):
            try:
                compile_expression(text)
            except ExpressionError as exc:
                yield xpr_path, f"expression does not parse: {exc.problem}"


# --- loading ---------------------------------------------------------------------------------


def _json_path(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    previous: int | str | None = None
    for part in location:
        # Discriminated unions add the tag ('filter', 'and', 'or') to the location: drop it.
        is_tag = part in ("filter", "and", "or") and (
            previous == "condition" or isinstance(previous, int)
        )
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif not is_tag:
            parts.append(f".{part}" if parts else str(part))
        previous = part
    return "".join(parts)


def parse_pattern(document: Any, *, file: str, prefix: str = "") -> Pattern:
    """Validate one pattern object; raises PatternError naming the file and JSON path."""
    try:
        pattern = Pattern.model_validate(document)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        path = prefix + _json_path(tuple(error["loc"]))
        raise PatternError(file, json_path=path, problem=error["msg"]) from exc
    for path, problem in pattern_problems(pattern):
        raise PatternError(file, json_path=prefix + path, problem=problem)
    return pattern


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PatternError(str(path), json_path="", problem=f"cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise PatternError(
            str(path), json_path="", problem=f"not JSON: {exc.msg} (line {exc.lineno})"
        ) from exc


def load_pattern_file(path: Path) -> list[Pattern]:
    """The patterns of one file (one object or a list)."""
    document = _read_json(path)
    if isinstance(document, list):
        return [
            parse_pattern(item, file=str(path), prefix=f"[{i}].") for i, item in enumerate(document)
        ]
    return [parse_pattern(document, file=str(path))]


def _document_problems(document: Any, *, file: str, prefix: str) -> list[PatternError]:
    """Every problem of one pattern object (all schema errors, else all semantic ones)."""
    try:
        pattern = Pattern.model_validate(document)
    except pydantic.ValidationError as exc:
        return [
            PatternError(
                file, json_path=prefix + _json_path(tuple(error["loc"])), problem=error["msg"]
            )
            for error in exc.errors()
        ]
    return [
        PatternError(file, json_path=prefix + path, problem=problem)
        for path, problem in pattern_problems(pattern)
    ]


def file_problems(path: Path) -> tuple[int, list[PatternError]]:
    """How many patterns a file holds and every problem found in them, for `validate`.

    Loading stops at the first problem; an author fixing a file wants them all at once.
    """
    try:
        document = _read_json(path)
    except PatternError as exc:
        return 0, [exc]
    if not isinstance(document, list):
        return 1, _document_problems(document, file=str(path), prefix="")
    problems = [
        problem
        for index, item in enumerate(document)
        for problem in _document_problems(item, file=str(path), prefix=f"[{index}].")
    ]
    return len(document), problems


def pattern_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders expand to their `*.json` files sorted by name."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.json"), key=lambda item: item.name))
        else:
            files.append(path)
    return files


def load_patterns(paths: Iterable[Path | str]) -> list[Pattern]:
    """Load and validate every pattern; duplicate pattern ids are refused."""
    patterns: list[Pattern] = []
    seen: dict[str, str] = {}
    for file in pattern_files(Path(path) for path in paths):
        for pattern in load_pattern_file(file):
            if pattern.pattern_id in seen:
                raise PatternError(
                    str(file),
                    json_path="id",
                    problem=f"duplicate pattern id {pattern.pattern_id!r} "
                    f"(also in {seen[pattern.pattern_id]})",
                )
            seen[pattern.pattern_id] = str(file)
            patterns.append(pattern)
    return patterns
