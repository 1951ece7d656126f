"""Development tools: the local Kafka broker, the simulator, the demo and the terminal view."""
