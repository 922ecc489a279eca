"""Logging configured once, by the entry points. The one naming rule: every module logs through
`log = logging.getLogger(__name__)`, so a record's name is the module's dotted path (filter by package:
`backend.http`, `workers.jobs`, ...)."""

import logging
import os

QUIET = ("aiobotocore.credentials", "botocore.credentials")  # "found credentials in ..." from every process


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
