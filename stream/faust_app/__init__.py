"""The distributed runtime: faust agents over Kafka that call the same stream core.

    codec.py       the bytes on the topics (reading and enriched envelopes) and the
                   kit-state codec of the faust table; pure, no faust
    steps.py       what one event or one batch does: plain functions, tested directly
    app.py         ``create_app``: the faust app, its topics, table and two agents
    ingest.py      ``KafkaHandler``: admitted batches → Kafka, for the MQTT consumer
    exceptions.py  the error tree

``stream.distributed`` is the public face of this package (docs/deployment.md).
"""
