"""The worker's three stages, each owning its state: validate, attribute, publish.

Data moves one way: input topics -> validate -> events-by-customer -> attribute ->
window partials -> publish -> rates, KPI and alert topics. No stage reads Kafka, Faust or
the clock: the runtime hands each one its fetched records and the time (`Now`).
"""
