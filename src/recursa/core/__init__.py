"""Shared vocabulary: errors, config, trace, budget, sandbox. Imports nothing above it."""
