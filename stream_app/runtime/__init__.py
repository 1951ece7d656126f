"""The worker around the domain: Faust app, batch consumer, Kafka clients, state store, recovery."""
