"""The workers against real services: RQ workers and their health, generation, the trl recipes on tiny models,
selection, and the whole label -> train -> serve loop without Label Studio."""
