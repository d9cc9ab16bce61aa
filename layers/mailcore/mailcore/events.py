"""Mail events on the EventBridge bus, for integrations. Bodies never travel in events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SOURCE = "serverless-mail"
#: PutEvents takes at most 10 entries.
_MAX_ENTRIES = 10


@dataclass
class EventPublisher:
    events: Any
    bus_name: str

    def publish(self, detail_type: str, details: list[dict[str, Any]]) -> None:
        """One PutEvents per 10 events; failed entries raise so the caller can retry."""
        if not self.bus_name:
            return
        for start in range(0, len(details), _MAX_ENTRIES):
            entries = [
                {"Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(d), "EventBusName": self.bus_name}
                for d in details[start : start + _MAX_ENTRIES]
            ]
            reply = self.events.put_events(Entries=entries)
            if reply.get("FailedEntryCount"):
                raise RuntimeError(f"{reply['FailedEntryCount']} events not accepted")
