"""The shape every function shares: Powertools logging, tracing and metrics around
:func:`mailcore.dispatch.dispatch`, and a store built on first use (never at import)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from mailcore.contracts import Request
from mailcore.dispatch import Operation, dispatch
from mailcore.store import Store

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def make_handler(service: str, operations: Mapping[type[Request], Operation]) -> Handler:
    logger = Logger(service=service)
    tracer = Tracer(service=service)
    metrics = Metrics(service=service)
    stores: list[Store] = []
    lock = threading.Lock()

    def store() -> Store:
        # One per container; concurrent first calls (in-process, threads) build it once.
        with lock:
            if not stores:
                stores.append(Store.from_env())
            return stores[0]

    @logger.inject_lambda_context(log_event=False)  # events may carry passwords
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics
    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        result = dispatch(event, operations, store)
        op = str(event.get("op", "unknown")) if isinstance(event, dict) else "unknown"
        if not is_metrics_disabled():  # else they would pile up unflushed in a long-lived process
            metrics.add_metric(name="Requests" if result["ok"] else "Refusals", unit=MetricUnit.Count, value=1)
        logger.info("handled", extra={"op": op, "ok": result["ok"], "error": result.get("error")})
        return result

    return lambda_handler  # type: ignore[no-any-return]  # Powertools decorators are untyped
