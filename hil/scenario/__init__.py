"""HIL scenarios: the model and registries, the runner, the checks, the report."""
