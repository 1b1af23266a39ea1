"""The services region."""
