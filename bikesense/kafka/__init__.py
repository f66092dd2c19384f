"""Apache Kafka for the distributed runtime: the pinned release (pom.xml) and a local broker."""
