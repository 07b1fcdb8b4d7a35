"""Device state: the latest reading of every device, an output of the pipeline."""
