"""Development tooling, not shipped in the image: local Kafka and FerretDB, the process launcher."""
