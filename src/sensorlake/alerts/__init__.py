"""Alerts: Alertmanager-like grouping and timing, and delivery to Discord, Slack, webhooks."""
