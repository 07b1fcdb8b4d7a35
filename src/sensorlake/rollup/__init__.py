"""Rollups: per device and numeric field, each minute and hour, as tables of the lake."""
