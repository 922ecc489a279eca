"""The ML the jobs share: loading models, the chat template, sampling candidates, the one reward-reading contract
(scoring), evaluation for the gates, and the Bayesian reward head and features for selection. May import
backend.core and backend.labels (pure); never the runtime, jobs, Flask or Redis."""
