"""The HTTP API of the engine (aiohttp): health, readiness, metrics, event intake, thred views."""
