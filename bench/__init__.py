"""Benchmark scripts (not tests): run them through scripts/with-services.sh; see BENCHMARKS.md."""
