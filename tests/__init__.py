"""The test suite, by layer: unit/ (pure logic), integration/ (Redis, SQL stores, RQ workers, trl on tiny models,
the Flask app), e2e/ (a real Label Studio, the browser, `make run`); support/ holds the helpers they share."""
