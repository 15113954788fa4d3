"""dataControl tasks (spec §11) turned into MongoDB filters and updates, results shaped back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from srvthreds_engine.core.errors import TASK_ERROR, EngineError
from srvthreds_engine.core.ids import nanoid
from srvthreds_engine.core.matchers import NOT, OR, REGEX, InvalidMatcherError, compile_matcher

PUT = "put"
GET_ONE = "getOne"
GET = "get"
UPDATE = "update"
UPSERT = "upsert"
REPLACE = "replace"
DELETE = "delete"
COUNT = "count"
RUN = "run"
OPS = (PUT, GET_ONE, GET, UPDATE, UPSERT, REPLACE, DELETE, COUNT, RUN)
READ_OPS = frozenset({GET_ONE, GET, COUNT})

# The task's update operators and the MongoDB operators they become; plain fields go to $set.
UPDATE_OPERATORS = {
    "$add": "$addToSet",
    "$push": "$push",
    "$remove": "$pull",
    "$now": "$currentDate",
    "$inc": "$inc",
    "$min": "$min",
    "$max": "$max",
    "$mul": "$mul",
}
# A list value of these means "each of these values" (MongoDB would take the list as one value).
_EACH_OPERATORS = frozenset({"$add", "$push"})
SET = "$set"

ID = "id"
MONGO_ID = "_id"

RUN_UNSUPPORTED = (
    "task op 'run' is not supported: the MongoDB adapter runs no stored procedures "
    "(the original engine ignored it)"
)


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """One task as the MongoDB call that runs it: `collection` is `params.type`.

    `documents` holds what `put` inserts (ids filled in) or the one `replace` document;
    `many` is True when `put` was given a list (its result is then the list of ids).
    `database` is `options.dbname` (None: the adapter's own database).
    """

    op: str
    collection: str
    where: str
    database: str | None = None
    name: str | None = None
    filter: dict[str, Any] = field(default_factory=dict)
    update: dict[str, Any] | None = None
    documents: list[dict[str, Any]] = field(default_factory=list)
    many: bool = False
    projection: dict[str, int] | None = None
    sort: list[tuple[str, int]] = field(default_factory=list)
    skip: int = 0
    limit: int = 0


# An outer entry: one task, or a list of tasks that run as one transaction.
Plan = TaskPlan | list[TaskPlan]


def task_error(problem: str, *, cause: Any = None) -> EngineError:
    """The 5200 error of a task that cannot run."""
    return EngineError(problem, code=TASK_ERROR, cause=cause)


def plan_tasks(tasks: Any, *, new_id: Callable[[], str] = nanoid) -> list[Plan]:
    """Check and translate every task before any runs: one bad task stops the whole list."""
    if not isinstance(tasks, list):
        raise task_error("tasks: must be a list of tasks (or of lists of tasks: transactions)")
    plans: list[Plan] = []
    for index, entry in enumerate(tasks):
        where = f"tasks[{index}]"
        if isinstance(entry, list):
            plans.append(_plan_transaction(entry, where=where, new_id=new_id))
        else:
            plans.append(plan_task(entry, where=where, new_id=new_id))
    return plans


def _plan_transaction(
    entries: list[Any], *, where: str, new_id: Callable[[], str]
) -> list[TaskPlan]:
    if not entries:
        raise task_error(f"{where}: a transaction needs at least one task")
    plans = []
    for index, entry in enumerate(entries):
        if isinstance(entry, list):
            raise task_error(f"{where}[{index}]: transactions do not nest")
        plans.append(plan_task(entry, where=f"{where}[{index}]", new_id=new_id))
    return plans


def plan_task(task: Any, *, where: str, new_id: Callable[[], str] = nanoid) -> TaskPlan:
    """The MongoDB call for one task `{op, name?, params{type, matcher?, ...}}`."""
    if not isinstance(task, Mapping):
        raise task_error(f"{where}: a task must be an object {{op, params}}")
    op = task.get("op")
    if op not in OPS:
        raise task_error(f"{where}.op: unknown op {op!r} (supported: {', '.join(OPS)})")
    if op == RUN:
        raise task_error(f"{where}: {RUN_UNSUPPORTED}")
    params = task.get("params")
    if not isinstance(params, Mapping):
        raise task_error(f"{where}.params: needs an object with at least `type`")
    name = task.get("name")
    base = TaskPlan(
        op=str(op),
        collection=_collection(params.get("type"), where=f"{where}.params.type"),
        where=where,
        database=_database(task.get("options"), where=f"{where}.options"),
        name=name if isinstance(name, str) else None,
        filter=translate_matcher(params.get("matcher"), where=f"{where}.params.matcher"),
    )
    return _PLANNERS[base.op](base, params, new_id)


def _plan_put(base: TaskPlan, params: Mapping[str, Any], new_id: Callable[[], str]) -> TaskPlan:
    where = f"{base.where}.params.values"
    values = params.get("values")
    if isinstance(values, Mapping):
        return _with(base, documents=[to_document(values, new_id=new_id)])
    if isinstance(values, list) and values and all(isinstance(item, Mapping) for item in values):
        documents = [to_document(item, new_id=new_id) for item in values]
        return _with(base, documents=documents, many=True)
    raise task_error(f"{where}: put needs an object (or a non-empty list of objects) to insert")


def _plan_read(base: TaskPlan, params: Mapping[str, Any], new_id: Callable[[], str]) -> TaskPlan:
    sort, skip, limit = translate_collector(
        params.get("collector"), where=f"{base.where}.params.collector"
    )
    projection = translate_selector(params.get("selector"), where=f"{base.where}.params.selector")
    return _with(base, projection=projection, sort=sort, skip=skip, limit=limit)


def _plan_update(base: TaskPlan, params: Mapping[str, Any], new_id: Callable[[], str]) -> TaskPlan:
    update = translate_update(params.get("values"), where=f"{base.where}.params.values")
    return _with(base, update=update)


def _plan_replace(base: TaskPlan, params: Mapping[str, Any], new_id: Callable[[], str]) -> TaskPlan:
    values = params.get("values")
    if not isinstance(values, Mapping):
        raise task_error(f"{base.where}.params.values: replace needs the whole new document")
    return _with(base, documents=[to_document(values, new_id=None)])


def _plan_filter_only(
    base: TaskPlan, params: Mapping[str, Any], new_id: Callable[[], str]
) -> TaskPlan:
    return base


_PLANNERS: dict[str, Callable[[TaskPlan, Mapping[str, Any], Callable[[], str]], TaskPlan]] = {
    PUT: _plan_put,
    GET_ONE: _plan_read,
    GET: _plan_read,
    UPDATE: _plan_update,
    UPSERT: _plan_update,
    REPLACE: _plan_replace,
    DELETE: _plan_filter_only,
    COUNT: _plan_filter_only,
}


def _with(base: TaskPlan, **changes: Any) -> TaskPlan:
    return replace(base, **changes)


def _collection(name: Any, *, where: str) -> str:
    # MongoDB refuses these names, or they reach its internal collections.
    if not isinstance(name, str) or not name:
        raise task_error(f"{where}: needs the collection name (a non-empty string)")
    if name.startswith("system.") or "$" in name or "\0" in name:
        raise task_error(f"{where}: {name!r} is not a collection name tasks may use")
    return name


def _database(options: Any, *, where: str) -> str | None:
    # `options.hostString` is not honoured: tasks run on the adapter's own connection.
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise task_error(f"{where}: needs an object {{dbname?}}")
    name = options.get("dbname")
    if name is None:
        return None
    if not isinstance(name, str) or not name or any(char in name for char in '/\\. "$\0'):
        raise task_error(f"{where}.dbname: {name!r} is not a database name")
    return name


def to_mongo_field(path: str) -> str:
    """A task field path with `id` (the document's own) as MongoDB's `_id`."""
    if path == ID:
        return MONGO_ID
    if path.startswith(ID + "."):
        return MONGO_ID + path[len(ID) :]
    return path


def _same_field(path: str) -> str:
    return path


def to_document(values: Mapping[str, Any], *, new_id: Callable[[], str] | None) -> dict[str, Any]:
    """A document to store: `id` becomes `_id` (a new one from `new_id` when it has none)."""
    document = {key: value for key, value in values.items() if key != ID}
    if ID in values:
        document = {MONGO_ID: values[ID], **document}
    elif MONGO_ID not in document and new_id is not None:
        document = {MONGO_ID: new_id(), **document}
    return document


# --- matchers --------------------------------------------------------------------------------


def translate_matcher(
    matcher: Any, *, where: str = "matcher", map_id: bool = True
) -> dict[str, Any]:
    """The MongoDB filter for a matcher of matchers.py (checked first, so errors name the path).

    `$re` becomes `$regex` with option `i`; with `map_id`, field `id` becomes `_id`.
    """
    if matcher is None:
        return {}
    try:
        compile_matcher(matcher, where=where)
    except InvalidMatcherError as exc:
        raise task_error(str(exc)) from exc
    return _translate_query(matcher, to_field=to_mongo_field if map_id else _same_field)


def _translate_query(
    matcher: Mapping[str, Any], *, to_field: Callable[[str], str]
) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for key, condition in matcher.items():
        if key == OR:
            query[OR] = [_translate_query(branch, to_field=to_field) for branch in condition]
        else:
            query[to_field(str(key))] = _translate_condition(condition)
    return query


def _translate_condition(condition: Any) -> Any:
    if not _is_operator_object(condition):
        # A literal: MongoDB equality (an embedded document compares in key order there).
        return condition
    translated: dict[str, Any] = {}
    for name, argument in condition.items():
        if name == REGEX:
            translated["$regex"] = argument
            translated["$options"] = "i"
        elif name == NOT:
            translated[NOT] = _translate_condition(argument)
        else:
            translated[name] = argument
    return translated


def _is_operator_object(condition: Any) -> bool:
    return (
        isinstance(condition, Mapping)
        and bool(condition)
        and all(str(key).startswith("$") for key in condition)
    )


# --- updates, selectors, collectors ----------------------------------------------------------


def translate_update(values: Any, *, where: str = "values") -> dict[str, Any]:
    """The MongoDB update document for task values (operators mapped, plain fields to `$set`)."""
    if not isinstance(values, Mapping) or not values:
        raise task_error(f"{where}: needs an object of the fields and operators to update")
    update: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        name = str(key)
        if name.startswith("$"):
            operator = _update_operator(name, where=where)
            fields = _operator_fields(name, value, where=f"{where}.{name}")
            update.setdefault(operator, {}).update(fields)
        else:
            update.setdefault(SET, {})[to_mongo_field(name)] = value
    return update


def _update_operator(name: str, *, where: str) -> str:
    operator = UPDATE_OPERATORS.get(name)
    if operator is None:
        supported = ", ".join(UPDATE_OPERATORS)
        raise task_error(f"{where}: unknown update operator {name} (supported: {supported})")
    return operator


def _operator_fields(name: str, value: Any, *, where: str) -> dict[str, Any]:
    if name == "$now":
        return {to_mongo_field(path): True for path in _now_fields(value, where=where)}
    if not isinstance(value, Mapping) or not value:
        raise task_error(f"{where}: needs an object of field: value")
    return {to_mongo_field(str(path)): _each(name, argument) for path, argument in value.items()}


def _each(name: str, argument: Any) -> Any:
    if not isinstance(argument, list):
        return argument
    if name in _EACH_OPERATORS:
        return {"$each": argument}
    if name == "$remove":
        return {"$in": argument}
    return argument


def _now_fields(value: Any, *, where: str) -> list[str]:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return list(value)
    if isinstance(value, Mapping) and value:
        return [str(path) for path in value]
    raise task_error(f"{where}: needs a field name, a list of them or an object of them")


def translate_selector(selector: Any, *, where: str = "selector") -> dict[str, int] | None:
    """The projection for `{include?, exclude?}` (None: whole documents)."""
    if selector is None:
        return None
    if not isinstance(selector, Mapping):
        raise task_error(f"{where}: needs an object {{include?, exclude?}}")
    include = _field_list(selector.get("include"), where=f"{where}.include")
    exclude = _field_list(selector.get("exclude"), where=f"{where}.exclude")
    if include and any(path != MONGO_ID for path in exclude):
        # MongoDB's projections are one or the other; only the id may be left out of an include.
        raise task_error(f"{where}: include and exclude cannot be combined (except excluding id)")
    projection = dict.fromkeys(include, 1) | dict.fromkeys(exclude, 0)
    return projection or None


def _field_list(value: Any, *, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise task_error(f"{where}: needs a list of field names")
    return [to_mongo_field(item) for item in value]


def translate_collector(
    collector: Any, *, where: str = "collector"
) -> tuple[list[tuple[str, int]], int, int]:
    """`(sort, skip, limit)` for `{sort[{field, desc}], skip, limit}`; limit 0 = no limit."""
    if collector is None:
        return [], 0, 0
    if not isinstance(collector, Mapping):
        raise task_error(f"{where}: needs an object {{sort?, skip?, limit?}}")
    sort = _sort_keys(collector.get("sort"), where=f"{where}.sort")
    skip = _count_argument(collector.get("skip"), where=f"{where}.skip")
    limit = _count_argument(collector.get("limit"), where=f"{where}.limit")
    return sort, skip, limit


def _sort_keys(value: Any, *, where: str) -> list[tuple[str, int]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise task_error(f"{where}: needs a list of {{field, desc?}}")
    keys = []
    for index, item in enumerate(value):
        path = item.get("field") if isinstance(item, Mapping) else None
        if not isinstance(path, str) or not path:
            raise task_error(f"{where}[{index}]: needs {{field, desc?}} with a field name")
        keys.append((to_mongo_field(path), -1 if item.get("desc") else 1))
    return keys


def _count_argument(value: Any, *, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise task_error(f"{where}: needs a whole number >= 0")
    return value


# --- results ---------------------------------------------------------------------------------


def shape_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as JSON: `_id` back to `id`, dates and driver types as strings."""
    shaped: dict[str, Any] = {}
    if MONGO_ID in document:
        shaped[ID] = to_json(document[MONGO_ID])
    for key, value in document.items():
        if key != MONGO_ID:
            # A record keeping its own `id` beside `_id` (the engine's records) keeps that one.
            shaped[key] = to_json(value)
    return shaped


def to_json(value: Any) -> Any:
    """A stored value as JSON (datetimes ISO 8601 UTC, ObjectId and the like as strings)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)


def put_result(plan: TaskPlan) -> Any:
    """What `put` answers: the new document's id, or the list of ids for a list."""
    ids = [to_json(document[MONGO_ID]) for document in plan.documents]
    return ids if plan.many else ids[0]
