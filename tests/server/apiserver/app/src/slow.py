"""A module that takes a while to import, so a deployment of it stays 'starting' long enough to see."""

import time

from flows import echo_workflow  # type: ignore[import-not-found]

time.sleep(2.0)

workflow = echo_workflow
