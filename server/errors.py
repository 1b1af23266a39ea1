"""Every error the engine raises on purpose.

The tree::

    LlamactlError                     base of all engine errors; `str(err)` is meant for a user
    ├── DeploymentConfigError         a deployment file is wrong (names file, key path, line, fix)
    ├── WorkflowLoadError             a service's `path: module:attr` cannot be imported or built
    ├── StateStoreError               the state store failed or is misconfigured
    │   ├── StateStoreClosed          used after close()
    │   └── StateStoreDamaged         its file is damaged (SQLite: malformed, not a database)
    ├── MessageQueueError             the message queue failed or is misconfigured
    │   ├── QueueConfigError          the deployment's `message-queue` settings are wrong (a bad url)
    │   ├── PublishRejected           the broker refused or never confirmed a publish
    │   ├── MessageQueueClosed        used after close()
    │   ├── LeaseLost                 ack/nack/extend on a lease that expired or was taken over
    │   └── QueueNotShared            `llamactl worker` of a deployment on the embedded queue
    ├── NotFound                      an unknown deployment, service, session or task
    │   ├── DeploymentNotFound
    │   ├── ServiceNotFound
    │   ├── SessionNotFound
    │   └── TaskNotFound
    ├── Conflict                      the request clashes with the current state
    │   ├── DeploymentExists
    │   ├── SessionLimitReached       the deployment holds `control-plane.max-sessions` sessions
    │   ├── TaskExists                a task id sent by the client is taken already
    │   ├── TaskFinished              an event sent to / cancel of a task that already ended
    │   └── TaskNotRunning            where a task's code is, asked of a task queued or ended
    ├── InvalidRequest                bad input from a caller (not a config file)
    ├── CannotListen                  the API's address cannot be bound (also an OSError, with errno)
    ├── TooFewOpenFiles               the process may open too few files to serve (`ulimit -n`)
    ├── ResultTooLarge                a task's result or event is over its service's max-result-size
    ├── TooManyEvents                 a run streamed more events than its service's max-events
    ├── NotEncodable                  a task's result or event contains itself (no JSON for it)
    ├── ExitInTask                    a task's code raised SystemExit or KeyboardInterrupt (it fails)
    ├── ContextNotSaved               a session task's workflow Context does not serialize (it fails)
    ├── Overloaded                    a service's queue is full: try again later (HTTP 429)
    ├── ShuttingDown                  the server is stopping (HTTP 503, with the task's id and status)
    ├── WorkerNoAnswer                a task's worker did not answer a question in time (HTTP 504)
    └── TaskWaitTimeout               a task did not finish within the wait (HTTP 504, id and status)

Each subclass carries a message that says what went wrong and what to do about it.
"""

from __future__ import annotations

from llamactl.server.sizes import show_size

__all__ = [
    "CannotListen",
    "Conflict",
    "ContextNotSaved",
    "DeploymentConfigError",
    "DeploymentExists",
    "DeploymentNotFound",
    "ExitInTask",
    "InvalidRequest",
    "LeaseLost",
    "LlamactlError",
    "MessageQueueClosed",
    "MessageQueueError",
    "NotFound",
    "Overloaded",
    "PublishRejected",
    "QueueConfigError",
    "QueueNotShared",
    "ResultTooLarge",
    "ServiceNotFound",
    "SessionLimitReached",
    "SessionNotFound",
    "ShuttingDown",
    "StateStoreClosed",
    "StateStoreDamaged",
    "StateStoreError",
    "TaskExists",
    "TaskFinished",
    "TaskNotFound",
    "TaskNotRunning",
    "TaskWaitTimeout",
    "TooFewOpenFiles",
    "TooManyEvents",
    "WorkerNoAnswer",
    "WorkflowLoadError",
]


class LlamactlError(Exception):
    """Base class of every error raised on purpose by the engine."""


class DeploymentConfigError(LlamactlError):
    """A deployment file is invalid.

    Attributes:
        file: the file that was read (or "<string>" when loaded from text).
        key_path: dotted path of the offending key, e.g. ``services.echo.source.type``.
        line: 1-based line of the offending key in the file, when known.
        problem: what is wrong and what would be valid.
    """

    def __init__(self, file: str, key_path: str, line: int | None, problem: str) -> None:
        self.file = file
        self.key_path = key_path
        self.line = line
        self.problem = problem
        where = f"{file}:{line}" if line is not None else file
        at = f" at '{key_path}'" if key_path else ""
        super().__init__(f"{where}: invalid deployment file{at}: {problem}")


class WorkflowLoadError(LlamactlError):
    """A service's workflow could not be imported or built."""


class StateStoreError(LlamactlError):
    """The state store failed or is misconfigured."""


class StateStoreClosed(StateStoreError):
    """The state store was used after close()."""


class StateStoreDamaged(StateStoreError):
    """The state store's file is damaged: no retry will mend it. The deployment takes no new
    task and answers its waiters at once (503, with this message) until it is mended.
    ``task_id``/``status`` name the task a caller was waiting for."""

    def __init__(self, message: str, *, task_id: str | None = None, status: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status


class MessageQueueError(LlamactlError):
    """The message queue failed or is misconfigured."""


class QueueConfigError(MessageQueueError):
    """The deployment's ``message-queue`` settings are wrong (a bad url, an unknown key or type):
    nothing was connected; fix the file."""


class PublishRejected(MessageQueueError):
    """The broker refused a publish or did not confirm it in time."""


class MessageQueueClosed(MessageQueueError):
    """The message queue was used after close()."""


class LeaseLost(MessageQueueError):
    """An ack, nack or extend named a lease that is no longer current (it expired or moved on)."""


class QueueNotShared(MessageQueueError):
    """Workers on another host need the deployment's queue, and the embedded one admits only the
    workers `llamactl serve` starts itself."""

    def __init__(self, deployment: str) -> None:
        super().__init__(
            f"deployment '{deployment}' uses the embedded message queue (zeromq), which only the workers "
            "`llamactl serve` starts itself can reach"
        )
        self.deployment = deployment


class NotFound(LlamactlError):
    """Something the caller named does not exist."""


class DeploymentNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Deployment '{name}' not found: list deployments with `llamactl deployments list`")
        self.name = name


class ServiceNotFound(NotFound):
    def __init__(self, service: str, deployment: str, known: list[str]) -> None:
        super().__init__(
            f"Service '{service}' not found in deployment '{deployment}': "
            f"known services are {', '.join(sorted(known)) or '(none)'}"
        )
        self.service = service
        self.deployment = deployment


class SessionNotFound(NotFound):
    def __init__(self, session_id: str, deployment: str) -> None:
        super().__init__(
            f"Session '{session_id}' not found in deployment '{deployment}': "
            "create one with `llamactl sessions create`"
        )
        self.session_id = session_id


class TaskNotFound(NotFound):
    def __init__(self, task_id: str, deployment: str) -> None:
        super().__init__(
            f"Task '{task_id}' not found in deployment '{deployment}': list tasks with `llamactl tasks list`"
        )
        self.task_id = task_id


class Conflict(LlamactlError):
    """The request clashes with the current state."""


class DeploymentExists(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"Deployment '{name}' already exists: redeploy it with reload, or delete it first")
        self.name = name


class SessionLimitReached(Conflict):
    def __init__(self, deployment: str, held: int, limit: int) -> None:
        super().__init__(
            f"Deployment '{deployment}' holds {held} sessions, its limit (`control-plane.max-sessions: "
            f"{limit}`): delete the sessions you no longer need (`llamactl sessions delete ID`), or raise "
            "the limit in the deployment file"
        )
        self.limit = limit


class TaskExists(Conflict):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task id '{task_id}' is already taken: send a new task id, or none to get one")
        self.task_id = task_id


class TaskFinished(Conflict):
    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(f"Task '{task_id}' has already finished ({status}): it no longer takes events")
        self.task_id = task_id
        self.status = status


class TaskNotRunning(Conflict):
    def __init__(
        self, task_id: str, status: str, *, behind: str | None = None, behind_asks: bool = False
    ) -> None:
        """``behind``: the task of its session that runs first (``behind_asks``: which waits for a
        person's answer)."""
        if status != "queued":
            now = f"has ended ({status})"
        elif behind is None:
            now = "is queued: it has not reached a worker yet"
        else:
            asks = ", which waits for a person's answer" if behind_asks else ""
            now = f"is queued: it waits for task '{behind}' of its session to end{asks}"
        super().__init__(f"Task '{task_id}' {now}: its code runs nowhere to look at")
        self.task_id = task_id
        self.status = status


class InvalidRequest(LlamactlError):
    """The caller sent something malformed (bad JSON input, missing default service, ...)."""


class CannotListen(LlamactlError, OSError):
    """The API server cannot listen where it was told: the port is taken, the host is not an
    address of this machine, or its name does not resolve. ``errno`` says which (None for a name
    that does not resolve); the message says what to do."""

    def __init__(self, message: str, error_number: int | None = None) -> None:
        super().__init__(message)
        self.errno = error_number


class TooFewOpenFiles(LlamactlError):
    """The process may open fewer files than serving needs, and cannot raise its own limit."""

    def __init__(self, limit: int, needed: int) -> None:
        super().__init__(
            f"this process may open only {limit} files (`ulimit -n`), and serving needs at least {needed}: "
            f"raise the limit (`ulimit -n 4096` in the shell, `LimitNOFILE=` in a systemd unit), then start "
            "it again"
        )
        self.limit = limit
        self.needed = needed


class ResultTooLarge(LlamactlError):
    """A task's result (with its Context) or one of its events is larger, encoded, than its
    service's ``max-result-size``: the task fails with this message instead of sending it."""

    def __init__(self, what: str, size: int, limit: int, service: str) -> None:
        super().__init__(
            f"{what} takes {show_size(size)} encoded, over the limit of {show_size(limit)} for service "
            f"'{service}': return less (store large data elsewhere and return where it is), or raise "
            "`max-result-size` in the deployment file (up to 512M)"
        )
        self.size = size
        self.limit = limit


class TooManyEvents(LlamactlError):
    """A run of a task streamed more events than its service's ``max-events``: it is stopped and
    fails with this message (each event is stored, so an endless stream would fill the disk)."""

    def __init__(self, task_id: str, limit: int, service: str) -> None:
        super().__init__(
            f"task {task_id} streamed more than {limit} events, the limit of service '{service}': stream "
            "fewer (a progress event every so often, not one per step), or raise `max-events` in the "
            "deployment file"
        )
        self.limit = limit


class NotEncodable(LlamactlError):
    """What a task returned or streamed contains itself (a list or dict holding itself), or nests
    deeper than JSON encoding goes: the task fails with this message."""

    def __init__(self) -> None:
        super().__init__(
            "the value cannot be turned into JSON: it contains itself (a list or dict holding itself) "
            "or nests hundreds of levels deep: return or stream a value without cycles, or a flatter one"
        )


ERROR_MESSAGE_LIMIT = 4_000
"""Characters of an exception's message kept in a task's error (and its worker's log line): a
message of megabytes (a whole input echoed back, say) would otherwise be stored with the task,
listed with every listing of tasks and logged in one line."""


def exception_line(exc: BaseException, limit: int = ERROR_MESSAGE_LIMIT) -> str:
    """``"ExcType: message"`` on a single line (just the type when there is no message), the
    message (with the notes added to it) cut to about ``limit`` characters; an exception whose
    ``str()`` fails still has one."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception as str_exc:  # user code's __str__: it must not keep the task from ending
        return f"{name} (its message could not be read: {type(str_exc).__name__} in its __str__)"
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list) and notes:  # added with add_note(): Python prints them with it
        text = " ".join([text, *(str(note) for note in notes)])
    message = " ".join(text[: limit * 2].split())  # a cut first: the whole may be megabytes
    if len(message) > limit or len(text) > limit * 2:
        message = f"{message[:limit]}... (message cut: {len(text):,} characters in all)"
    return f"{name}: {message}" if message else name


class ExitInTask(LlamactlError):
    """A task's code raised ``SystemExit`` or ``KeyboardInterrupt``: it fails the task instead of
    ending the worker process (which would end every task it runs, and, delivered again, the next
    worker). ``__cause__`` is the original exception."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(
            f"{exception_line(exc)}, raised by the task's code: a task cannot stop its worker, so the "
            "task failed instead (raise an exception to fail a task; a worker stops on its own signals only)"
        )


class ContextNotSaved(LlamactlError):
    """A task of a session ended with a workflow Context that does not serialize, so the session's
    next task could not go on from it: the task fails rather than lose that state without a word.
    ``__cause__`` is the serializer's error."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(
            "the workflow Context cannot be saved for the session's next task "
            f"({exception_line(exc)}): keep only values that serialize (JSON types, pydantic models) "
            "in ctx.store; the session keeps the Context it had before this task"
        )


class Overloaded(LlamactlError):
    """A service has as many tasks waiting as its queue holds; the caller should retry later."""

    def __init__(self, service: str, deployment: str, queued: int, limit: int, retry_after: float = 1.0):
        super().__init__(
            f"Service '{service}' of deployment '{deployment}' has {queued} tasks waiting (its limit is "
            f"{limit}): try again in a moment, or raise `max-queued` in the deployment file"
        )
        self.service = service
        self.retry_after = retry_after


class ShuttingDown(LlamactlError):
    """The server is stopping. ``task_id``/``status`` name the task a caller was waiting for;
    ``state`` is ``"deleting"`` when only this deployment goes (it is being deleted)."""

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        status: str | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status
        self.state = state


class WorkerNoAnswer(LlamactlError):
    """The worker running a task did not answer a question about it in time."""

    def __init__(self, task_id: str, replica_id: str | None, waited: float) -> None:
        super().__init__(
            f"the worker running task '{task_id}' ({replica_id or 'unknown'}) did not answer within "
            f"{waited:g} s: the task's code may be blocking its event loop. `kill -USR2 <its pid>` "
            "(the dashboard shows it) prints every thread's stack into the server's output"
        )
        self.task_id = task_id


class TaskWaitTimeout(LlamactlError):
    """A caller waited as long as it may for a task that is still queued or running."""

    def __init__(self, task_id: str, status: str, waited: float) -> None:
        super().__init__(
            f"Task '{task_id}' is still {status} after {waited:g} s: it keeps going; follow it with "
            f"`llamactl tasks show {task_id}` or GET .../tasks/{task_id}/results"
        )
        self.task_id = task_id
        self.status = status
