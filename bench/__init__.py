"""revlearn's benchmarks: a pytest-benchmark grid and the report command."""
