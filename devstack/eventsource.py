"""Lambda's SQS event source mapping, emulated: what invokes RelayFunction locally.

The mappings come from template.yaml (a function's ``Events`` of ``Type: SQS``), so the
local stack polls the same queues with the same batch size as the cloud would. A batch
is handed to the function as the SQS event Lambda builds; the records it does not report
in ``batchItemFailures`` (``ReportBatchItemFailures``) are deleted, the others become
visible again after the queue's visibility timeout, as in the cloud.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Invoke = Callable[[dict[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class SqsMapping:
    function: str  # logical ID
    queue: str  # logical ID
    batch_size: int


def sqs_mappings(template: Mapping[str, Any]) -> list[SqsMapping]:
    """Each ``Type: SQS`` event of each function (``Queue: !GetAtt X.Arn``)."""
    found = []
    for logical, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            if event.get("Type") == "SQS":
                props = event["Properties"]
                queue = props["Queue"]["Fn::GetAtt"][0]
                found.append(SqsMapping(logical, queue, int(props.get("BatchSize", 10))))
    return found


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """An SQS event as Lambda's event source mapping delivers it."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(m["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class SqsPoller:
    """Polls one queue and invokes one function with each batch."""

    def __init__(self, sqs: Any, queue_url: str, invoke: Invoke, batch_size: int = 10) -> None:
        self.sqs = sqs
        self.url = queue_url
        self.arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.invoke = invoke
        self.batch_size = batch_size

    def receive(self, wait_seconds: int = 0) -> list[dict[str, Any]]:
        reply = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=self.batch_size, AttributeNames=["All"], WaitTimeSeconds=wait_seconds
        )
        return list(reply.get("Messages", []))

    def deliver(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """One invocation with these messages; deletes those not reported as failed."""
        result = self.invoke(sqs_event(messages, self.arn))
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
        return dict(result)

    def run(self, rounds: int = 10) -> int:
        """Batches until the queue has nothing visible; the number of records handled."""
        handled = 0
        for _ in range(rounds):
            messages = self.receive()
            if not messages:
                break
            self.deliver(messages)
            handled += len(messages)
        return handled

    def run_until(self, stop: threading.Event, wait_seconds: int = 1) -> None:
        """Long-poll until ``stop`` is set (the local stack's background thread)."""
        while not stop.is_set():
            try:
                messages = self.receive(wait_seconds)
                if messages:
                    self.deliver(messages)
            except Exception:  # a failed invocation leaves the batch for the next receive
                log.exception("event source %s: batch failed", self.url)
                stop.wait(1)
