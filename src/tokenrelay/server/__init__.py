"""The HTTP face of tokenrelay: an ASGI app built by `create_app`."""
