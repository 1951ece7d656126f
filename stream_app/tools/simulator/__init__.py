"""`upsell-stream simulate`: realistic offer and purchase events with a known ground truth.

`scenario` is the pure world model and event generator; `command` produces its messages
to Kafka and prints the truth.
"""
