"""Error codes and the exact error messages the engine sends back to clients."""

from __future__ import annotations

from typing import Any

SERVER_ERROR = 5000
TASK_ERROR = 5200
NOT_FOUND = 5201
ALREADY_EXISTS = 5202
NO_THRED = 5203
CLIENT_ERROR = 4000
UNAUTHORISED = 4101
LOGIN_ERROR = 4102
BAD_ARGUMENT = 4200
MISSING_ARGUMENT = 4202


class EngineError(Exception):
    """A failure with a client-visible code; its message is sent verbatim in `content.error`."""

    def __init__(
        self,
        message: str,
        *,
        code: int = SERVER_ERROR,
        cause: Any = None,
        thred_scope: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.cause = cause
        # NB: thred scope errors are notified to every thred participant, not only the sender.
        self.thred_scope = thred_scope
        # Who is notified instead of the sender (set for thred scope errors).
        self.recipients: list[str] | None = None

    def to_content(self) -> dict[str, Any]:
        """The `content.error` object of the notification."""
        error: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.cause is not None:
            error["cause"] = self.cause
        return error


def no_thred_for_event(thred_id: str, *, event_id: str, event_type: str) -> EngineError:
    """5203 for a bound event whose thred is not stored."""
    return EngineError(
        f"Thred {thred_id} does not, or no longer exists for event {event_id} of type {event_type}",
        code=NO_THRED,
    )


def no_thred(thred_id: str) -> EngineError:
    """5203 for an admin operation naming a thred that is not stored."""
    return EngineError(f"Thred {thred_id} does not, or no longer exists", code=NO_THRED)


def pattern_failed(pattern_id: str, *, event_id: str, event_type: str, cause: Any) -> EngineError:
    """5000 for an expression or step that fails while an unbound event is applied."""
    return EngineError(
        f"Error applying pattern {pattern_id} to event {event_id} of type {event_type}",
        code=SERVER_ERROR,
        cause=cause,
    )


def broadcast_not_allowed(pattern_name: str) -> EngineError:
    """4101 for a broadcast into a pattern without `broadcastAllowed`."""
    return EngineError(f"Pattern {pattern_name} does not allow broadcast events", code=UNAUTHORISED)


def not_a_participant(source_id: str, *, thred_id: str) -> EngineError:
    """4101 for a broadcast or echo from a source that is not a thred participant."""
    return EngineError(
        f"Participant {source_id} is not a member of the thred {thred_id} and cannot broadcast",
        code=UNAUTHORISED,
    )


def lacks_role(source_id: str, *, role: str) -> EngineError:
    """4101 for an operation from a source without the role it needs."""
    return EngineError(f"Participant {source_id} lacks required role: {role}", code=UNAUTHORISED)


def broadcast_without_message(event_id: str) -> EngineError:
    """4202 for a broadcast without a `message` value."""
    return EngineError(
        f"Broadcast event {event_id} must have a 'message' value", code=MISSING_ARGUMENT
    )


def system_thred_required() -> EngineError:
    """4202 for a system event whose thredId is not SYSTEM."""
    return EngineError("System event must have a system thredId: SYSTEM", code=MISSING_ARGUMENT)


def no_operation_name() -> EngineError:
    """4202 for a system event without `values.op`."""
    return EngineError("No operation name supplied for system event", code=MISSING_ARGUMENT)


def unknown_operation(op: str) -> EngineError:
    """4200 for an unknown `values.op`."""
    return EngineError(f"No operation found called {op} for system event", code=BAD_ARGUMENT)


def get_events_without_thred() -> EngineError:
    """4202 for `getEvents` without a thredId."""
    return EngineError("No thredId supplied for getEvents operation", code=MISSING_ARGUMENT)


def server_error(cause: Any) -> EngineError:
    """5000 for any other unexpected failure."""
    return EngineError("Server Error", code=SERVER_ERROR, cause=cause)


class PatternError(ValueError):
    """A pattern that cannot work: names the file, the JSON path and the problem."""

    def __init__(self, file: str, *, json_path: str, problem: str) -> None:
        location = f"{file}: {json_path}" if json_path else file
        super().__init__(f"{location}: {problem}")
        self.file = file
        self.json_path = json_path
        self.problem = problem
