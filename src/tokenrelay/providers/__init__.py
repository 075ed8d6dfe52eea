"""Model providers: each turns a GenerationRequest into an async iterator of Deltas."""
