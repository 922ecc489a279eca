"""Logging configured once, by the entry points. The one naming rule: every module logs through
`log = logging.getLogger(__name__)`, so a record's name is the module's dotted path (filter by package:
`backend.http`, `workers.jobs`, ...)."""

import logging
import os


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
