"""MongoDB-style matchers (spec §11) evaluated over JSON documents in memory, without I/O."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

# RE2 matches in time linear in the text, so an admin's `$re` cannot stall the event loop.
import re2  # type: ignore[import-untyped]

# Field paths resolve to the values found there (several through arrays); a test sees them all.
ValuesTest = Callable[[list[Any]], bool]
DocumentTest = Callable[[Mapping[str, Any]], bool]

OR = "$or"
NOT = "$not"
REGEX = "$re"
IN = "$in"
NOT_IN = "$nin"
NOT_EQUAL = "$ne"
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
FIELD_OPERATORS = frozenset({*COMPARISONS, NOT_EQUAL, IN, NOT_IN, NOT, REGEX})
SUPPORTED = ", ".join(sorted({*FIELD_OPERATORS, OR}))


class InvalidMatcherError(ValueError):
    """A matcher that cannot be evaluated: names the JSON path inside the matcher and why."""


def compile_matcher(matcher: Any, *, where: str = "matcher") -> DocumentTest:
    """A test of documents for `matcher`; every operator is checked now, not at evaluation.

    Semantics follow MongoDB's: a dotted path walks objects and array elements, a field holding
    an array matches when the array or any element does, and a missing field equals `null`.
    """
    if not isinstance(matcher, Mapping):
        raise InvalidMatcherError(f"{where}: a matcher must be an object, not {_kind(matcher)}")
    tests = [_compile_entry(str(key), value, where=where) for key, value in matcher.items()]
    return lambda document: all(test(document) for test in tests)


def _compile_entry(key: str, value: Any, *, where: str) -> DocumentTest:
    if key == OR:
        return _compile_or(value, where=f"{where}.{OR}")
    if key.startswith("$"):
        raise InvalidMatcherError(
            f"{where}: unknown operator {key} at the top of a matcher (supported there: {OR})"
        )
    values_test = _compile_condition(value, where=f"{where}.{key}")
    path = key.split(".")
    return lambda document: values_test(_resolve(document, path))


def _compile_or(value: Any, *, where: str) -> DocumentTest:
    if not isinstance(value, list) or not value:
        raise InvalidMatcherError(f"{where}: needs a non-empty list of matchers")
    branches = [
        compile_matcher(item, where=f"{where}[{index}]") for index, item in enumerate(value)
    ]
    return lambda document: any(branch(document) for branch in branches)


def _compile_condition(condition: Any, *, where: str) -> ValuesTest:
    if not _is_operator_object(condition, where=where):
        return lambda values: _equals_any(values, expected=condition)
    tests = [
        _compile_operator(name, argument, where=f"{where}.{name}")
        for name, argument in condition.items()
    ]
    return lambda values: all(test(values) for test in tests)


def _is_operator_object(condition: Any, *, where: str) -> bool:
    if not isinstance(condition, Mapping) or not condition:
        return False
    operators = [str(key).startswith("$") for key in condition]
    if all(operators):
        return True
    if any(operators):
        raise InvalidMatcherError(f"{where}: mixes operators and field names in one object")
    return False


def _compile_operator(name: str, argument: Any, *, where: str) -> ValuesTest:
    if name in COMPARISONS:
        compare = COMPARISONS[name]
        return lambda values: any(
            _comparable(value, argument) and compare(value, argument) for value in values
        )
    if name == NOT_EQUAL:
        return lambda values: not _equals_any(values, expected=argument)
    if name in (IN, NOT_IN):
        return _compile_membership(argument, negate=name == NOT_IN, where=where)
    if name == REGEX:
        return _compile_regex(argument, where=where)
    if name == NOT:
        if not isinstance(argument, Mapping) or not _is_operator_object(argument, where=where):
            raise InvalidMatcherError(f"{where}: needs an object of operators, e.g. {{$in: [...]}}")
        negated = _compile_condition(argument, where=where)
        return lambda values: not negated(values)
    raise InvalidMatcherError(f"{where}: unknown operator {name} (supported: {SUPPORTED})")


def _compile_membership(argument: Any, *, negate: bool, where: str) -> ValuesTest:
    if not isinstance(argument, list):
        raise InvalidMatcherError(f"{where}: needs a list, not {_kind(argument)}")
    if negate:
        return lambda values: not any(_equals_any(values, expected=item) for item in argument)
    return lambda values: any(_equals_any(values, expected=item) for item in argument)


def _compile_regex(argument: Any, *, where: str) -> ValuesTest:
    if not isinstance(argument, str):
        raise InvalidMatcherError(f"{where}: needs a regular expression string")
    try:
        compiled = _case_insensitive_regex(argument)
    except re2.error as exc:
        raise InvalidMatcherError(f"{where}: invalid regular expression {argument!r}") from exc
    return lambda values: any(
        isinstance(value, str) and compiled.search(value) is not None for value in values
    )


def _case_insensitive_regex(text: str) -> Any:
    options = re2.Options()
    options.case_sensitive = False
    # The error is raised to the caller; RE2 would also print it to stderr.
    options.log_errors = False
    return re2.compile(text, options)


def _resolve(document: Any, path: list[str]) -> list[Any]:
    """The values at `path`, each array also contributing its elements (MongoDB's rule)."""
    found = [document]
    for part in path:
        found = [child for value in found for child in _children(value, part)]
    expanded: list[Any] = []
    for value in found:
        expanded.append(value)
        if isinstance(value, list):
            expanded.extend(value)
    return expanded


def _children(value: Any, part: str) -> list[Any]:
    if isinstance(value, Mapping):
        return [value[part]] if part in value else []
    if not isinstance(value, list):
        return []
    if part.isdigit():
        index = int(part)
        return [value[index]] if index < len(value) else []
    return [child for element in value for child in _children(element, part)]


def _equals_any(values: list[Any], *, expected: Any) -> bool:
    if not values:
        # MongoDB: a missing field matches `null`.
        return expected is None
    return any(_equal(value, expected) for value in values)


def _equal(left: Any, right: Any) -> bool:
    # JSON has distinct booleans: Python's True == 1 must not make them equal.
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_equal, left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(_equal(left[key], right[key]) for key in left)
    return bool(left == right)


def _comparable(left: Any, right: Any) -> bool:
    # MongoDB compares within a type: numbers with numbers, strings with strings.
    if isinstance(left, bool) or isinstance(right, bool):
        return False
    numbers = (int, float)
    return (isinstance(left, numbers) and isinstance(right, numbers)) or (
        isinstance(left, str) and isinstance(right, str)
    )


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")
