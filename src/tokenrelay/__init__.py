"""tokenrelay: stream LLM responses to people and programs, correctly, resumably and cheaply."""

from __future__ import annotations

__version__ = "0.1.0"
