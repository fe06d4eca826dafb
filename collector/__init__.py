"""The collector: MQTT ingest, storage, analytics and the chiller-plant optimiser."""
