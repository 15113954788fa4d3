"""Test services: Redis, RabbitMQ and FerretDB started as child processes on loopback ports."""
