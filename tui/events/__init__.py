"""The events region: the task on show, its event stream and what it waits for."""
