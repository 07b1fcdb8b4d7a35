"""The worker loop and the output contract: stream → every output, exactly once."""
