"""The control-plane state region."""
