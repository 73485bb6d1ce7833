"""Prefect 3 flows: thin wiring of the engine functions in `r3fa` and `pipelines`, with retries and artifacts."""
