"""Model generation: backends, batching, resumable runs, the data guard."""
