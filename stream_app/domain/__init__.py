"""The pure domain: no Kafka, Faust or network import may appear below this package."""
