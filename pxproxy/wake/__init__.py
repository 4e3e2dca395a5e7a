"""Idle-watch: wake sleeping guests on demand, stop them when idle. Transport-free."""
