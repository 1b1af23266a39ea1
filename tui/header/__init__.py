"""The header region: where the dashboard is connected, the counters, throughput, and the banner."""
