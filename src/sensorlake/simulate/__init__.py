"""Synthetic device fleets, so a fresh install can be tried end to end without real hardware."""
