"""One decision, top to bottom (`engine.DecisionEngine.decide`), and what an outcome changes:
context validation, guardrails, local time, sampling, the explanation, the model cache, people and
arms switched at runtime. Build an engine with `service.runtime.build_engine`."""
