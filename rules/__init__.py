"""Routing rules: load/validate (format), compile (compiler), evaluate (engine, reference), decide.

Semantics, shared by both evaluators (see rules/README.md):

* a missing fact never satisfies ``eq gt gte lt lte in matches exists:true``;
* ``ne``, ``not_in`` and ``exists: false`` are true when the fact is missing, so
  ``not {eq}`` ≡ ``ne`` and ``not {in}`` ≡ ``not_in`` (plain two-valued logic);
* ``matches`` is ``re.search`` semantics in RE2 syntax, linear time (``rules.patterns``;
  anchor with ``^…$`` for a whole-string match).
"""
