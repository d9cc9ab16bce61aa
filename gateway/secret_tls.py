"""The TLS certificate kept in a Secrets Manager secret (``TLS_SECRET_ARN``), kept current.

The secret is a JSON object with ``certificate`` (the PEM chain) and ``private_key``. It is
written to the two files that :class:`gateway.tls.ServerTls` watches, and read again every
``TLS_SECRET_REFRESH_SECONDS`` (3600): a new version of the secret (a renewed certificate
put there by its rotation) is written over the files, and the gateway's file watch takes
it up for new connections without a restart. A read that fails, or a secret without the
two fields, is logged and the files stay as they are. Each refresh costs one
GetSecretValue per gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class SecretCertificate:
    def __init__(self, client: Any, arn: str, directory: Path) -> None:
        self.client = client
        self.arn = arn
        self.cert_file = directory / "cert.pem"
        self.key_file = directory / "key.pem"
        #: The secret's version now in the files.
        self.version: str | None = None

    def fetch(self) -> bool:
        """Write the secret's certificate and key if its version is not the one in the
        files; True if written. Raises what Secrets Manager raises, KeyError or ValueError
        for a secret that is not the expected JSON object."""
        reply = self.client.get_secret_value(SecretId=self.arn)
        if reply["VersionId"] == self.version:
            return False
        secret = json.loads(reply["SecretString"])
        certificate, key = secret["certificate"], secret["private_key"]
        # The key first: the watcher takes the pair up when the certificate matches it.
        _replace(self.key_file, key, 0o600)
        _replace(self.cert_file, certificate, 0o644)
        self.version = reply["VersionId"]
        return True

    async def refresh(self, interval: float) -> None:
        """Fetch every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await asyncio.to_thread(self.fetch):
                    log.info("TLS certificate version %s written from the secret", self.version)
            except Exception as error:  # the certificate in use stays
                log.error("TLS secret %s not read, the files stay: %s: %s", self.arn, type(error).__name__, error)


def _replace(path: Path, text: str, mode: int) -> None:
    """A new file renamed over the old one: the watcher never reads a half-written file."""
    staged = path.with_name(path.name + ".new")
    staged.unlink(missing_ok=True)  # created afresh, with its mode
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(staged, path)
