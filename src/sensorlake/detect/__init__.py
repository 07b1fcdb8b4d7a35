"""Anomaly detection inside the stream, and the anomalies table."""
