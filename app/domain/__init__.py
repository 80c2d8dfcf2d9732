"""Pure domain code: money, state machines, errors. No Flask, no database session."""
