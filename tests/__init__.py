"""The test suite (a package, so that mypy names its modules tests.*)."""
