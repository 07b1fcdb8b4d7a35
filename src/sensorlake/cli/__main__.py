"""`python -m sensorlake.cli`."""

from sensorlake.cli.main import main

main()
