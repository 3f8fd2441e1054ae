"""Data-set builders, one module per corpus: a new corpus goes here as `<name>.py`, its entry script stays thin."""
