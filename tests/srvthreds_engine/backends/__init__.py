"""Engine adapter tests against real Redis, RabbitMQ and FerretDB servers."""
