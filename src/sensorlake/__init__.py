"""sensorlake: readings in over MQTT or HTTP, durably streamed, exactly once into Iceberg."""

from sensorlake.errors import ConfigError, SensorlakeError

__version__ = "0.1.0"

__all__ = ["ConfigError", "SensorlakeError", "__version__"]
