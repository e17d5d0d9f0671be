"""What the tests share that is not a test: probes named by ``_target_`` in overrides, the entry-point
runner, reference degradations and the network rebuilt from a checkpoint."""
