"""Generation decoupled from connections: producers, logs, subscribers."""
