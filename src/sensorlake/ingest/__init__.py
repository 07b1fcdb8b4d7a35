"""How readings enter: the HTTP body formats and the identity/time conventions of a reading."""

from sensorlake.ingest.body import Rejected, pack_messages, parse_body
from sensorlake.ingest.identity import IdentityRules, TimeValueError

__all__ = ["IdentityRules", "Rejected", "TimeValueError", "pack_messages", "parse_body"]
