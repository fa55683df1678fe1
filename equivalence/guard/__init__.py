"""The guard around upgrades: golden vectors, the fingerprint, the report and its case matrices, portability
cells and the benchmark. Talks to frameworks only through the registry."""
