"""The queue names jobs by dotted path (the backend never imports workers): every such name must resolve."""

from __future__ import annotations

from importlib import import_module

from backend import queue


def test_every_dotted_job_name_imports() -> None:
    names = {value for key, value in vars(queue).items() if key.endswith("_JOB")}
    assert len(names) == 5  # generate, reward, policy, sft, refit
    for dotted in names:
        module, function = dotted.rsplit(".", 1)
        assert callable(getattr(import_module(module), function)), dotted
