"""Who may use the HTTP API: API keys with scopes, their live view in `up`, per-key rate limits.

The package imports nothing itself, so that a command using one part loads only that part.
"""
