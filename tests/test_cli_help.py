"""`tactful --help` lists every command from the summaries in service/cli/main.py without
importing any of them, and those summaries say what each command's own help says."""
from __future__ import annotations

import subprocess
import sys

import click

from service.cli.main import COMMANDS, main


def test_every_summary_opens_as_its_commands_own_help():
    ctx = click.Context(main)
    for name, (_, summary) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.hidden == (summary is None), name
        if summary:
            own = command.get_short_help_str(200).split()
            assert summary.rstrip(".").split()[:4] == own[:4], (name, summary, " ".join(own))


def test_help_imports_no_command():
    code = ("import sys; from click.testing import CliRunner; from service.cli.main import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "print(r.output); print(sorted(m for m in ('flask', 'vowpalwabbit', 'scipy', 'psycopg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out
    assert all(name in out for name, (_, summary) in COMMANDS.items() if summary)
