"""The `tactful` command: thin click commands over library functions, one module per concern:
serve.py (serve, its halves web and learn, check-policies), offline.py (export, evaluate,
retrain, import-obd), versions.py (the `models` group), simulate.py (simulate), storage.py (db
upgrade, prune, backup), keys.py (the `keys` group: API keys).

Commands are imported when they run (click's pattern for lazily loaded subcommands): `tactful
serve`, its web workers and its learner never load what only the data scientist's and the
analyst's commands need (scipy, scikit-learn, matplotlib), so they start in half a second."""
from __future__ import annotations

import importlib

import click

COMMANDS = {
    "serve": "service.cli.serve:serve",
    "web": "service.cli.serve:web",
    "learn": "service.cli.serve:learn",
    "check-policies": "service.cli.serve:check_policies",
    "export": "service.cli.offline:export_cmd",
    "evaluate": "service.cli.offline:evaluate_cmd",
    "retrain": "service.cli.offline:retrain_cmd",
    "import-obd": "service.cli.offline:import_obd_cmd",
    "models": "service.cli.versions:models_group",
    "simulate": "service.cli.simulate:simulate_command",
    "db": "service.cli.storage:db_group",
    "prune": "service.cli.storage:prune_cmd",
    "backup": "service.cli.storage:backup_cmd",
    "keys": "service.cli.keys:keys_group",
}


class LazyGroup(click.Group):
    """A group whose commands are named here and imported from their modules when used."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, attribute = self.lazy[name].split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="tactful")
def main() -> None:
    """Tactful: decisions for personalized communications."""


if __name__ == "__main__":
    main()
