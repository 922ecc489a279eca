"""The admin's way in: the `python -m backend` CLI (serve, connect, import, train, rollback, status, export,
...), the export of labels and models, the HTML report and the status summary. May import everything in
backend; nothing in backend imports it."""
