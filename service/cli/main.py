"""The `tactful` command: thin click commands over library functions, one module per concern:
serve.py (serve, its web half, check-policies), learn.py (a learner alone), offline.py (export,
evaluate, retrain, import-obd), report.py (report contents), versions.py (the `models` group),
simulate.py (simulate), storage.py (db upgrade, prune, backup), keys.py (the `keys` group: API
keys), policies.py (the `policies` group: pause, resume, circuit breakers).

Commands are imported when they run (click's pattern for lazily loaded subcommands): `tactful
serve`, its web workers and its learner never load what only the data scientist's and the
analyst's commands need (scipy, scikit-learn, matplotlib), so they start in half a second."""
from __future__ import annotations

import importlib

import click

# name -> (where the command is, what `tactful --help` says of it without importing it)
COMMANDS = {
    "serve": ("service.cli.serve:serve", "Serve the HTTP API (gunicorn) with a learner candidate."),
    "web": ("service.cli.serve:web", None),  # hidden: serve's web half
    "learn": ("service.cli.learn:learn", "Run a learner candidate alone (`serve` starts one)."),
    "check-policies": ("service.cli.serve:check_policies", "Validate a directory of policy files."),
    "export": ("service.cli.offline:export_cmd", "Export every final decision of a policy."),
    "evaluate": ("service.cli.offline:evaluate_cmd", "Estimate a candidate's value against the active version."),
    "retrain": ("service.cli.offline:retrain_cmd", "Train VW offline from the logs into a candidate version."),
    "import-obd": ("service.cli.offline:import_obd_cmd", "Import Open Bandit Dataset logs into a store."),
    "models": ("service.cli.versions:models_group", "Model versions: list, show, activate, rollback, promote, shadow."),
    "simulate": ("service.cli.simulate:simulate_command",
                 "Simulate SCENARIO (a TOML file) against the real decision code."),
    "db": ("service.cli.storage:db_group", "The store's schema: upgrade, copy."),
    "prune": ("service.cli.storage:prune_cmd", "Remove old model versions and old decisions."),
    "backup": ("service.cli.storage:backup_cmd", "Copy a live SQLite store, consistently."),
    "keys": ("service.cli.keys:keys_group", "API keys: requests carry one as `Authorization: Bearer <key>`."),
    "report": ("service.cli.report:report_group", "Reports from the logs: contents (candidates to retire)."),
    "policies": ("service.cli.policies:policies_group", "A policy's switches: pause, resume, status; circuit breakers."),
}


class LazyGroup(click.Group):
    """A group whose commands are named here and imported from their modules when used; its
    help lists them from their summaries here, importing none (`tactful --help` in a blink)."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str | None]], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, attribute = self.lazy[name][0].split(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary) for name, (_, summary) in sorted(self.lazy.items()) if summary]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="tactful")
def main() -> None:
    """Tactful: decisions for personalized communications."""


if __name__ == "__main__":
    main()
