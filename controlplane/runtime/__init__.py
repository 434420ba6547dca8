"""Measured speed work that reaches into libraries' internals, fenced off from the
domain: what each piece does, the measurement behind it and what it touches are in
README.md beside this file; tests/controlplane/runtime/test_guards.py fails when a
library changes a private name relied on here."""
