"""
The only modules that touch another library's private names.

Each module here adapts one library (``twisted``, ``markus``, ...): where the
collector relies on behaviour that the library does not make public, the
reliance is written once, here, beside a test in ``tests/unit/`` that pins
the behaviour, so an upgrade that changes it fails a test instead of the
collector. Everything else in ``antenna_tw`` uses public APIs only
(``tests/unit/test_private_api.py``).
"""
