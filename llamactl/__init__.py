"""llamactl: serve, run and watch multi-agent workflow deployments."""

__version__ = "0.1.0.dev0"
