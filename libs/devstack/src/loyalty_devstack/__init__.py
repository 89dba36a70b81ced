"""Local development stack: real PostgreSQL and Redis (the machine's, or started from pip packages),
the `make run` supervisor and the test-suite set-up."""
