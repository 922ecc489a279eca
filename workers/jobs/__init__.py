"""The RQ jobs, by the dotted names backend.queue enqueues: generate (candidates and their scores), train (reward,
policy, SFT chains with their gates) and select (the selection head's refit). May import workers.runtime, recipes,
ml and backend below the HTTP layer."""
