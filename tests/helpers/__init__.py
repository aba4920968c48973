"""Plain helpers shared by the tests (tests/conftest.py puts tests/ on sys.path): import from here, never from
another test module."""
