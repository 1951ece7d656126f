"""upsell-stream: live upsell rates from offer and purchase events in Kafka."""

__version__ = "0.1.0"
