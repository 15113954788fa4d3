"""Pydantic models of patterns (the original JSON shapes) and the validating loader."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from srvthreds_engine.core.errors import PatternError
from srvthreds_engine.core.expressions import ExpressionError, compile_expression
from srvthreds_engine.core.sources import regex_of, regex_problem

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


def spread_expression(value: Any) -> str | None:
    """The JSONata text of a `"$xpr"` key's value, or None when the value is not text.

    The value is plain JSONata; the `$xpr( … )` wrapper is accepted too (it cannot be a valid
    plain expression, as `$xpr` names no function), so templates written either way work.
    """
    if not isinstance(value, str):
        return None
    if value.startswith(XPR_PREFIX) and value.endswith(")"):
        return value[len(XPR_PREFIX) : -1]
    return value


def template_expressions(template: Any, *, path: str) -> Iterator[tuple[str, str]]:
    """Every expression of a template (`$xpr(...)` strings, `"$xpr"` keys) with its JSON path."""
    if isinstance(template, str):
        if template.startswith(XPR_PREFIX) and template.endswith(")"):
            yield path, template[len(XPR_PREFIX) : -1]
    elif isinstance(template, list):
        for index, item in enumerate(template):
            yield from template_expressions(item, path=f"{path}[{index}]")
    elif isinstance(template, dict):
        for key, value in template.items():
            spread = spread_expression(value) if key == XPR_KEY else None
            if spread is not None:
                yield f"{path}.{key}", spread
            else:
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
    if reaction.allowedSources is not None:
        yield from _check_allowed_sources(reaction.allowedSources, path=f"{path}.allowedSources")


def _check_allowed_sources(allowed: str | list[str], *, path: str) -> Iterator[tuple[str, str]]:
    entries = (
        [(path, allowed)]
        if isinstance(allowed, str)
        else [(f"{path}[{index}]", entry) for index, entry in enumerate(allowed)]
    )
    for entry_path, entry in entries:
        regex = regex_of(entry)
        problem = None if regex is None else regex_problem(regex)
        if problem is not None:
            yield entry_path, problem


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


@dataclass(frozen=True, slots=True)
class FileCheck:
    """One pattern file as loading sees it: its valid patterns and every problem found in it."""

    path: Path
    count: int
    patterns: list[Pattern]
    problems: list[PatternError]


def _checked_document(
    document: Any, *, file: str, prefix: str
) -> tuple[Pattern | None, list[PatternError]]:
    """One pattern object and all its problems (every schema error, else every semantic one)."""
    try:
        pattern = Pattern.model_validate(document)
        semantic = list(pattern_problems(pattern))
    except pydantic.ValidationError as exc:
        return None, [
            PatternError(
                file, json_path=prefix + _json_path(tuple(error["loc"])), problem=error["msg"]
            )
            for error in exc.errors()
        ]
    except RecursionError:
        problem = "conditions nested too deeply to load"
        return None, [PatternError(file, json_path=prefix.rstrip("."), problem=problem)]
    return pattern, [
        PatternError(file, json_path=prefix + path, problem=problem) for path, problem in semantic
    ]


def parse_pattern(document: Any, *, file: str, prefix: str = "") -> Pattern:
    """Validate one pattern object; raises PatternError naming the file and JSON path."""
    pattern, problems = _checked_document(document, file=file, prefix=prefix)
    if problems or pattern is None:
        raise problems[0]
    return pattern


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PatternError(str(path), json_path="", problem=f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
        raise PatternError(str(path), json_path="", problem=problem) from None
    except json.JSONDecodeError as exc:
        raise PatternError(
            str(path), json_path="", problem=f"not JSON: {exc.msg} (line {exc.lineno})"
        ) from exc
    except RecursionError:
        raise PatternError(str(path), json_path="", problem="nested too deeply to load") from None


def _duplicate_id(
    pattern: Pattern, *, document: Any, file: str, prefix: str, seen: dict[str, str]
) -> PatternError | None:
    """A duplicate pattern id (across files too), else None after remembering where it is."""
    pattern_id = pattern.pattern_id
    if pattern_id not in seen:
        seen[pattern_id] = f"{file} {prefix[:-1]}" if prefix else file
        return None
    key = "id" if isinstance(document, dict) and document.get("id") else "name"
    return PatternError(
        file,
        json_path=prefix + key,
        problem=f"duplicate pattern id {pattern_id!r} (also in {seen[pattern_id]})",
    )


def check_pattern_file(path: Path, *, seen_ids: dict[str, str]) -> FileCheck:
    """One file's patterns and problems; `seen_ids` (pattern id: where) spans the files loaded."""
    try:
        document = _read_json(path)
    except PatternError as exc:
        return FileCheck(path=path, count=0, patterns=[], problems=[exc])
    listed = isinstance(document, list)
    items = document if listed else [document]
    patterns: list[Pattern] = []
    problems: list[PatternError] = []
    for index, item in enumerate(items):
        prefix = f"[{index}]." if listed else ""
        pattern, item_problems = _checked_document(item, file=str(path), prefix=prefix)
        problems.extend(item_problems)
        if pattern is None:
            continue
        duplicate = _duplicate_id(
            pattern, document=item, file=str(path), prefix=prefix, seen=seen_ids
        )
        if duplicate is not None:
            problems.append(duplicate)
        elif not item_problems:
            patterns.append(pattern)
    return FileCheck(path=path, count=len(items), patterns=patterns, problems=problems)


def check_pattern_files(paths: Iterable[Path | str]) -> list[FileCheck]:
    """Every pattern file `paths` name, checked in order: what both loading and `validate` use.

    Loading refuses the first problem; `validate` names them all. Deciding both from here keeps
    them from drifting apart.
    """
    seen_ids: dict[str, str] = {}
    files = pattern_files(Path(path) for path in paths)
    return [check_pattern_file(file, seen_ids=seen_ids) for file in files]


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
    """Load and validate every pattern; the first problem (duplicate ids included) is raised."""
    checks = check_pattern_files(paths)
    for check in checks:
        if check.problems:
            raise check.problems[0]
    return [pattern for check in checks for pattern in check.patterns]
