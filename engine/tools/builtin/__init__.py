"""The shipped tools: every module here that defines `TOOLS` (a tuple of `Tool`) is registered."""
