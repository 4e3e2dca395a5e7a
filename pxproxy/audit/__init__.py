"""The audit file: hash-chained JSON lines, their writer (with rotation) and their verifier."""
