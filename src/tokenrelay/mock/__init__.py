"""`tokenrelay mock-upstream`: the sim, served as OpenAI and Anthropic would serve it."""
