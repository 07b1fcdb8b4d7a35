"""`sensorlake agent`: runs on the device, publishes real readings, stores and forwards.

A source (the host itself, a Sense HAT, or any command printing JSON) is sampled on a schedule;
every reading goes through a durable local queue and leaves it only once the broker has
acknowledged it (MQTT QoS 1), so an outage costs nothing but delay, up to the queue's bound.

The package itself imports nothing: `sensorlake --help` and the sources must not pay for the MQTT
and TLS libraries that only a running agent needs.
"""
