"""SMTP in the MX role (RFC 5321 with the ESMTP extensions of DESIGN.md): mail from other
servers for local recipients, streamed to S3 staging and delivered by the IngestFunction.

``serve`` is the listener's entry point; :mod:`gateway.smtp.protocol` holds the state
machine, :mod:`gateway.smtp.grammar` the parsers, :mod:`gateway.smtp.replies` the reply
catalog and :mod:`gateway.smtp.limits` the limits with their reasons.
"""

from gateway.smtp.protocol import SmtpService, serve

__all__ = ["SmtpService", "serve"]
