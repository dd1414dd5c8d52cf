"""The simulation's own error: a run that cannot go as asked. Scenario files have theirs
(scenario.ScenarioError), policy files theirs (service.policy.PolicyError)."""
from __future__ import annotations


class SimulationError(ValueError):
    """A simulation that cannot run as asked (an unknown decision maker, a store that already
    holds decisions, a server that cannot be reached or runs another policy)."""
