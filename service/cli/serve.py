"""Serving: `tactful serve` (gunicorn workers and one learner process), its two halves `web` and
`learn`, and `check-policies`."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import click
from gunicorn.app.base import BaseApplication

from service.api.app import create_app
from service.cli.options import db_option, open_store, policies_option
from service.clock import make_clock
from service.learning.learner import run_forever
from service.policy import PolicyError, load_policies
from service.policy.bandit import ensure_active_version
from service.runtime import build_learner
from service.store import StoreUnavailable
from service.store.postgres import safe_location


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")


def _load(policies: str):
    try:
        return load_policies(policies)
    except PolicyError as exc:
        raise click.ClickException(f"invalid policy: {exc}") from None


def _prepare_store(db: str, policies_dir: str, clock_kind: str):
    """Create the schema and every policy's first model version once, before any worker starts."""
    policies = _load(policies_dir)
    store = open_store(db, must_exist=False)
    now = make_clock(clock_kind, store).now()
    for policy in policies.values():
        ensure_active_version(store, policy, now)
    store.close()
    return policies


common = [
    db_option,
    policies_option,
    click.option("--clock", type=click.Choice(["system", "request"]), default="system", show_default=True,
                 help="'request': requests carry timestamps and now is the latest seen (simulation, replay)."),
]


def with_common(f):
    for opt in reversed(common):
        f = opt(f)
    return f


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--learner/--no-learner", default=True, show_default=True,
              help="Run a learner candidate beside the web workers (one learner leads per store, "
                   "whichever replica it runs on); --no-learner serves only.")
@with_common
def serve(host: str, port: int, workers: int, learner: bool, db: str, policies: str, clock: str) -> None:
    """Serve the HTTP API (gunicorn) with a learner candidate. Ctrl-C stops both."""
    _setup_logging()
    loaded = _prepare_store(db, policies, clock)
    base = [sys.executable, "-m", "service.cli"]
    args = ["--policies", policies, "--clock", clock]
    env = dict(os.environ, TACTFUL_DB=db)  # not on the command line, where `ps` would show a password
    children = {"web": subprocess.Popen(base + ["web", "--host", host, "--port", str(port),
                                                "--workers", str(workers)] + args, env=env)}
    if learner:
        children["learner"] = subprocess.Popen(base + ["learn"] + args, env=env)
    click.echo(f"Tactful serving {', '.join(loaded)} on http://{host}:{port} (db {safe_location(db)}, clock {clock}, "
               f"{workers} workers, " + (f"learner candidate pid {children['learner'].pid}" if learner else
                                         "no learner") + "); Ctrl-C stops", err=True)
    stopping = False

    def _stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        dead = [name for name, p in children.items() if p.poll() is not None]
        if dead:
            click.echo(f"tactful: the {dead[0]} process exited ({children[dead[0]].returncode}); stopping", err=True)
            code = 1
            break
        time.sleep(0.2)
    for p in children.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 15
    for p in children.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    click.echo("tactful: stopped", err=True)
    sys.exit(code)


@click.command(hidden=True)
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8000, type=int)
@click.option("--workers", default=2, type=int)
@with_common
def web(host: str, port: int, workers: int, db: str, policies: str, clock: str) -> None:
    """Only the gunicorn server (`serve` runs it beside the learner)."""
    config = {"DB": db, "POLICIES": policies, "CLOCK": clock, "SECRET": os.environ.get("TACTFUL_SECRET")}

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "sync")
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("proc_name", "tactful")
            self.cfg.set("control_socket_disable", True)

        def load(self):
            # in each worker, after the fork: its own store and models. A store that is away
            # (PostgreSQL restarting) is waited for: a worker that failed to boot would stop
            # gunicorn, and with it the replica; gunicorn restarts one that waits too long.
            while True:
                try:
                    return create_app(config)
                except StoreUnavailable as exc:
                    logging.getLogger("tactful").warning("waiting for the store: %s", exc)
                    time.sleep(2.0)

    Server().run()


@click.command()
@click.option("--interval", type=float, default=None, help="Seconds between learning rounds (policy default).")
@click.option("--batch", type=click.IntRange(1), default=100_000, show_default=True,
              help="At most this many decisions per published model version.")
@with_common
def learn(interval: float | None, batch: int, db: str, policies: str, clock: str) -> None:
    """Run a learner candidate alone (`serve` starts one): it learns while it holds the store's lease."""
    _setup_logging()
    loaded = _load(policies)
    store = open_store(db, must_exist=False)
    run_forever(build_learner(store, loaded, make_clock(clock, store), batch=batch), interval)


@click.command("check-policies")
@click.argument("directory", default="examples/policies")
def check_policies(directory: str) -> None:
    """Validate a directory of policy files and print what they declare."""
    for name, p in _load(directory).items():
        click.echo(f"{name}: {len(p.arms)} arms, {len(p.spec.features)} features, "
                   f"{len(p.spec.guardrails.caps)} caps, reward window {p.spec.reward.window:g}s")
