"""Adapters of the engine's ports: memory, Redis, RabbitMQ, MongoDB; independent of each other."""
