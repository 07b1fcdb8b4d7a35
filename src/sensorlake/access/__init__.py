"""Who may use the HTTP API: API keys with scopes, their live view in `up`, per-key rate limits."""

from sensorlake.access.keys import (
    ApiKey,
    KeySet,
    KeyStore,
    Scope,
    check_device_name,
    hash_key,
)
from sensorlake.access.live import LiveKeys
from sensorlake.access.ratelimit import RateLimiter

__all__ = [
    "ApiKey",
    "KeySet",
    "KeyStore",
    "LiveKeys",
    "RateLimiter",
    "Scope",
    "check_device_name",
    "hash_key",
]
