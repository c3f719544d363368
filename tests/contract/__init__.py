"""Local stand-ins that speak external services' documented APIs (for contract tests)."""
