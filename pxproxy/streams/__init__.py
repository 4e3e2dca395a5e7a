"""Streams of what guests and nodes do: stats, journals, tails and command output."""
