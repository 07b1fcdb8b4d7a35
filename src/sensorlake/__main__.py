"""`python -m sensorlake`."""

from sensorlake.cli.main import main

main()
