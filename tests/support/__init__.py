"""Helpers the tests and the benches share; this package imports no test module and no conftest.

    settings            paths, the test Redis/PostgreSQL URLs, make_settings, settings_env
    payloads            Label Studio's captured requests and the exchanges most protocol tests start with
    services            real processes and databases: run_worker, start_redis, postgres_url
    tiny                tiny random causal LMs (build_tiny_model) and the training sizes for them (TINY_TRAIN)
    labelstudio_server  a real Label Studio on loopback (`python -m tests.support.labelstudio_server --install`)
    fuzz                hostile mutations of the captured payloads
    wait                wait_for, the one poll loop

Importing a module here sets no environment variable (conftest.py's pytest_configure does, for tests only),
so a bench keeps the product's defaults.
"""
