"""Benchmarks: code that measures foveal (speed against a named baseline, the fast recipe against its
floor), kept apart from the library it measures. Only the CLI (`foveal bench`) and the scripts in
bench/ import it; nothing of the library imports it."""
