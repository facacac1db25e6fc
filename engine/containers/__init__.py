"""Containers: options, records, lifecycle under conmon, logs, exec, inspect."""
