"""Simulation: the real decision code against a synthetic population (docs/simulation.md).

    run.py          simulate() and run_maker(): the library entry points
    loop.py         one decision maker's run, ask by ask, in virtual time
    targets.py      where the decision code runs: in process, or over HTTP
    makers.py       the decision makers compared: Tactful, its fatigue-blind twin, the baselines
    world.py        the population, its asks and their random draws, shared by every maker
    scenario.py     the scenario file format
    truth.py        how the population truly responds
    referee.py      the simulator's own guardrail check, independent of the engine's
    metrics.py      what a run measured; report.py: its plots and reports
    known_truth.py  logs with an exactly known value, for the off-policy estimators' tests
    errors.py       SimulationError
"""
