"""Service layer: one function per use case. Takes a Session, returns models; no Flask."""
