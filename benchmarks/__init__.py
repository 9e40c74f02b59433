"""Benchmarks that run aifr side by side with its peers; results go to docs/benchmarks.md."""
