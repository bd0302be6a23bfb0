//! Benchmarks for factory.
