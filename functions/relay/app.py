"""RelayFunction: OutboundQueue records to remote MXs, with retries and bounces.

An SQS batch (Powertools BatchProcessor): each record is processed on its own, and only
the failed ones are reported back (ReportBatchItemFailures), so SQS redelivers those and
deletes the rest. The relay's markers make a redelivered record a no-op; the answer waits
for the last of them (``batch.settle``), and a record whose marker was not written is failed.
"""

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from mailcore.relay import RelayService

logger = Logger(service="relay")
tracer = Tracer(service="relay")
processor = BatchProcessor(event_type=EventType.SQS)
service = RelayService()  # clients are created on first use, never at import


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with service.batch(event, context) as batch:
        response = process_partial_response(
            event=event, record_handler=batch.handle, processor=processor, context=context
        )
        return batch.settle(response)
