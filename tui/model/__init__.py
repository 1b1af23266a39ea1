"""What the dashboard knows, as plain Python (no Textual): bounded books of tasks, sessions, services
and events, fed by snapshots and the change feed, and read by the widgets."""
