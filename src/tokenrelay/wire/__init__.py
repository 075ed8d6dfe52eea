"""Provider wire formats as pure functions: upstream chunks to Deltas, events to dialect bytes."""
