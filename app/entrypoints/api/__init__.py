"""HTTP API: one blueprint per resource. Each view parses, calls one service, serializes."""
