"""Python clients for tokenrelay's native API."""
