"""What a task's input must be: a JSON object of the workflow's arguments that a worker can take."""

from __future__ import annotations

import json

from llamactl.server.errors import InvalidRequest

__all__ = ["MAX_INPUT_DEPTH", "decode_input"]

MAX_INPUT_DEPTH = 100


def decode_input(raw: str) -> dict[str, object]:
    """The task input as the workflow's keyword arguments; InvalidRequest for anything else."""
    if not raw.strip():
        return {}
    hint = 'task input must be a JSON object of the workflow\'s arguments, e.g. \'{"message": "hi"}\''
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidRequest(f"{hint}: it is nested more than {MAX_INPUT_DEPTH} levels deep") from None
    except ValueError as exc:
        raise InvalidRequest(f"{hint}: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{hint}, not {type(value).__name__}")
    # Both checks below walk the whole value (~7 us of the ~10 a small input costs): skipped where
    # the text itself rules the problem out (no escapes in ASCII text make no lone surrogate; a
    # value nests at most one level deeper than the brackets in its text).
    if not (raw.isascii() and "\\u" not in raw):
        try:
            # What cannot be encoded again (a lone surrogate such as "\\ud800") could never reach a worker.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"{hint}: it holds a lone surrogate (\\ud800-\\udfff), which is not text"
            ) from None
        except RecursionError:
            raise InvalidRequest(f"{hint}: it is nested more than {MAX_INPUT_DEPTH} levels deep") from None
    if raw.count("{") + raw.count("[") >= MAX_INPUT_DEPTH and _depth(value) > MAX_INPUT_DEPTH:
        raise InvalidRequest(f"{hint}: it is nested more than {MAX_INPUT_DEPTH} levels deep")
    return value


def _depth(value: object) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest
