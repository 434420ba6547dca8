"""The benchmark harness: each `bin/manage bench_*` command is a thin entry point in
`management/commands/` for a module here. Nothing in the product imports this package.

Empty of imports on purpose: the helper processes (`python -m benchmarks.upstream`,
`python -m benchmarks.event_watcher`) must start in milliseconds, without Django."""
