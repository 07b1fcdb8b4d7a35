"""Rules: AWS IoT SQL over every batch, and the actions that take its results."""
