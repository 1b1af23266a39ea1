"""The `llamactl` command line. Each command imports what it needs when it runs, so --help stays fast."""
