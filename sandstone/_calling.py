"""Calling app code (listeners, hooks, procedures) that may be plain, ``async def`` or Deferred-returning."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred


def as_deferred(value: object) -> Deferred[Any] | None:
    """The Deferred to wait on for what app code returned (coroutines and other awaitables are
    started), or ``None`` when it is a plain value."""
    if isinstance(value, Deferred):
        return value
    if inspect.iscoroutine(value):
        return Deferred.fromCoroutine(value)
    if inspect.isawaitable(value):
        return Deferred.fromCoroutine(_await(value))
    return None


def invoke(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function``: its plain result, or a Deferred when it works asynchronously."""
    result = function(*args, **kwargs)
    waiting = as_deferred(result)
    return result if waiting is None else waiting


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
