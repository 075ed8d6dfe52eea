"""Shaping what a stream delivers: whole words or lines (words.py), and JSON parsed as it
streams (jsonstream.py), put together per stream by shaper.py."""
