"""A device's bundle: everything it needs to connect, in one folder to copy onto the device."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from sensorlake.config import Config
from sensorlake.devices.ca import IssuedCertificate, write_private
from sensorlake.devices.tls import public_host


def device_topic(config: Config, name: str) -> str:
    """An example topic the device may publish to, from the first of `devices.topics`."""
    pattern = config.devices.publish_filters(name)[0]
    levels = ["farm" if level == "+" else "telemetry" if level == "#" else level
              for level in pattern.split("/")]
    return "/".join(levels)


def bundle_dir(config: Config, name: str) -> Path:
    return config.data_dir / "bundles" / name


def write_bundle(config: Config, name: str, cert: IssuedCertificate, ca_pem: bytes,
                 out: Path | None = None) -> Path:
    """Write (or overwrite, after a rotation) the device's folder; the key is mode 0600."""
    folder = out or bundle_dir(config, name)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    write_private(folder / "device.key", cert.key_pem)
    (folder / "device.crt").write_bytes(cert.cert_pem)
    (folder / "ca.crt").write_bytes(ca_pem)
    host, port, topic = public_host(config), config.server.mqtts_port, device_topic(config, name)
    endpoint = {
        "device": name,
        "host": host,
        "mqtts_port": port,
        "topic": topic,
        "may_publish": config.devices.publish_filters(name),
        "may_subscribe": config.devices.subscribe_filters(name),
        "certificate_expires": cert.not_after.isoformat(timespec="seconds"),
    }
    (folder / "endpoint.json").write_text(json.dumps(endpoint, indent=2) + "\n")
    reading = json.dumps({"temperature": 21.5, "humidity": 58.0})
    (folder / "publish.sh").write_text(
        "#!/bin/sh\n"
        f"# Publish one reading as device {name} over TLS, authenticated by this folder's\n"
        "# certificate (Debian: apt-get install mosquitto-clients).\n"
        'cd "$(dirname "$0")"\n'
        f"mosquitto_pub -h {shlex.quote(host)} -p {port} --cafile ca.crt --cert device.crt "
        f"--key device.key -q 1 \\\n  -t {shlex.quote(topic)} -m {shlex.quote(reading)}\n"
    )
    os.chmod(folder / "publish.sh", 0o700)
    (folder / "publish.py").write_text(
        f'"""Publish one reading as device {name} over TLS (pip install paho-mqtt)."""\n\n'
        "import json\nfrom pathlib import Path\n\nimport paho.mqtt.client as mqtt\n\n"
        "here = Path(__file__).parent\n"
        'endpoint = json.loads((here / "endpoint.json").read_text())\n'
        "client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "
        'client_id=endpoint["device"])\n'
        'client.tls_set(ca_certs=str(here / "ca.crt"), certfile=str(here / "device.crt"),\n'
        '               keyfile=str(here / "device.key"))\n'
        'client.connect(endpoint["host"], endpoint["mqtts_port"])\n'
        "client.loop_start()\n"
        f"info = client.publish(endpoint[\"topic\"], json.dumps({reading}), qos=1)\n"
        "info.wait_for_publish(10)\n"
        'print("published" if info.is_published() else "not acknowledged")\n'
        "client.disconnect()\nclient.loop_stop()\n"
    )
    return folder
