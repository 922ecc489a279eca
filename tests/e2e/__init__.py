"""The product as a user runs it: a real Label Studio, the browser, `make run`, the README's commands."""
