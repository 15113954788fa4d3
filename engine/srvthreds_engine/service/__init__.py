"""The engine service: async processing through the ports only (routing, runs, timers)."""
