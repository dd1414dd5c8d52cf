"""The `tactful` command: thin click commands over library functions, one module per concern
(serve.py: serving; data.py: export, evaluate, retrain, model versions, the OBD import;
simulate.py: simulation)."""
from __future__ import annotations

import click

from service.cli import data, serve
from service.cli.simulate import simulate_command


@click.group()
@click.version_option(package_name="tactful")
def main() -> None:
    """Tactful: decisions for personalized communications."""


for command in serve.COMMANDS:
    main.add_command(command)
data.register(main)
main.add_command(simulate_command)

if __name__ == "__main__":
    main()
