"""The agent server: HTTP routes, carrier media endpoints, workers, drain and metrics."""
