"""Serving: `tactful serve` (gunicorn workers and one learner process), its two halves `web` and
`learn`, and `check-policies`.

`serve` keeps both going: gunicorn's master replaces a worker that dies, and `serve` replaces a
learner that dies (freeing the lease the dead one held, so the new one leads at once); only
gunicorn itself exiting stops `serve`. docs/reliability.md has the kill -9 runs.

Safe when nobody configured anything: a store that holds no API key is served without
authentication on a loopback address only (with a warning naming `tactful keys create`); asked for
any other address, `serve` refuses to start and says what to do, unless `--insecure-no-auth`
says the network is private. Once the store holds a key, every request but /healthz, /readyz and
/openapi.json needs one, whatever the address or the flag (service/api/auth.py)."""
from __future__ import annotations

import gc
import ipaddress
import logging
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time

import click
from gunicorn.app.base import BaseApplication

from service.api.app import create_app
from service.cli.options import db_option, open_store, policies_option
from service.clock import make_clock
from service.learning.learner import LEASE, LEASE_TTL, lease_holder
from service.metrics import MULTIPROC_DIR
from service.policy import PolicyError, load_policies
from service.policy.bandit import ensure_active_version
from service.policy.reload import PolicyReloads
from service.policy.stored import remember
from service.runtime import CHECKPOINT_SECONDS
from service.store import Store, StoreUnavailable
from service.store import open_store as connect
from service.store.postgres import safe_location


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")


def _load(policies: str):
    try:
        return load_policies(policies)
    except PolicyError as exc:
        raise click.ClickException(f"invalid policy: {exc}") from None


def _prepare_store(db: str, policies_dir: str, clock_kind: str, host: str, insecure: bool):
    """Check who may call the service on `host`, then create the schema and every policy's first
    model version once, before any worker starts: (policies, a warning to print or None)."""
    policies = _load(policies_dir)
    store = open_store(db, must_exist=False)
    try:
        warning = access_warning(store, host, insecure)
        now = make_clock(clock_kind, store).known()  # None under --clock request before any request
        remember(store, policies, now)
        for policy in policies.values():
            ensure_active_version(store, policy, now)
        store.forget_published_policies(list(policies))  # the files are what serves now
    finally:
        store.close()
    return policies, warning


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0].split("%")[0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(ipaddress.ip_address(a).is_loopback for a in found)


CREATE_KEY = "tactful keys create --name NAME --scopes decide,people:read,people:write,admin"


def access_warning(store: Store, host: str, insecure: bool) -> str | None:
    """What to warn about before serving `store` on `host`; a click error when it would be open
    to anyone who reaches a non-loopback address."""
    keys = store.api_keys(include_revoked=True)
    if keys:
        if not any(k["revoked_at"] is None for k in keys):
            return ("WARNING: every API key of this store is revoked: every request but /healthz, /readyz and "
                    f"/openapi.json is refused until you create one ({CREATE_KEY}).")
        return "--insecure-no-auth changes nothing: this store holds API keys, and every request needs one." \
            if insecure else None
    if is_loopback(host):
        return (f"WARNING: this store holds no API key, so Tactful serves WITHOUT authentication, on {host} only. "
                f"Create a key with `{CREATE_KEY}` (same --db): from then on every request needs one.")
    if insecure:
        lines = [f"--insecure-no-auth: serving on {host} WITHOUT AUTHENTICATION.",
                 "Anyone who reaches this address can decide, read and erase people, change",
                 "consent, switch arms off and activate model versions. Use it on a private",
                 "network only. To require keys from then on, create one:", f"  {CREATE_KEY}"]
        return "\n".join(["", "!" * 78, *(f"!!! {line}" for line in lines), "!" * 78])
    raise click.ClickException(
        f"refusing to serve on {host} without authentication: the store ({store.location}) holds no API key, so "
        "anyone who reaches this address could decide, read people, change consent, erase people and activate "
        "model versions. Do one of:\n"
        f"  - create a key first, against the same store (--db or TACTFUL_DB):  {CREATE_KEY}\n"
        "    (printed once; clients send it as `Authorization: Bearer <key>`)\n"
        "  - serve on a loopback address only:  --host 127.0.0.1 (the default)\n"
        "  - on a private network you trust, serve without keys:  --insecure-no-auth")


common = [
    db_option,
    policies_option,
    click.option("--clock", type=click.Choice(["system", "request"]), default="system", show_default=True,
                 help="'request': requests carry timestamps and now is the latest seen (simulation, replay)."),
]


metrics_option = click.option(
    "--metrics-public", is_flag=True, envvar="TACTFUL_METRICS_PUBLIC",
    help="Serve GET /metrics without an API key (for a port only your monitoring network reaches); by "
         "default it needs a key with the scope `metrics`.")


def metrics_dir() -> tuple[str, bool]:
    """The directory where every process of this replica keeps its Prometheus values
    (service/metrics.py): PROMETHEUS_MULTIPROC_DIR if set, emptied of an earlier run's files,
    else a new temporary one; and whether it was made here (removed when `serve` stops)."""
    given = os.environ.get(MULTIPROC_DIR)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        return given, False
    return tempfile.mkdtemp(prefix="tactful-metrics-"), True


insecure_option = click.option(
    "--insecure-no-auth", is_flag=True,
    help="Serve a store that holds no API key on a non-loopback address, without authentication: for a "
         "private network only (once the store holds a key, every request needs one anyway).")


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
@insecure_option
@metrics_option
@with_common
def serve(host: str, port: int, workers: int, learner: bool, insecure_no_auth: bool, metrics_public: bool, db: str,
          policies: str, clock: str) -> None:
    """Serve the HTTP API (gunicorn) with a learner candidate, replaced if it dies. Ctrl-C stops both."""
    _setup_logging()
    loaded, warning = _prepare_store(db, policies, clock, host, insecure_no_auth)
    if warning:
        click.echo(warning, err=True)
    base = [sys.executable, "-m", "service.cli"]
    args = ["--policies", policies, "--clock", clock]
    values, made_here = metrics_dir()
    # the database's URL goes by env, not on the command line, where `ps` would show a password
    env = dict(os.environ, TACTFUL_DB=db, **{MULTIPROC_DIR: values})
    web_cmd = base + ["web", "--host", host, "--port", str(port), "--workers", str(workers)] + args \
        + (["--insecure-no-auth"] if insecure_no_auth else []) + (["--metrics-public"] if metrics_public else [])
    children = Children(db, env, web_cmd, base + ["learn"] + args if learner else None)
    click.echo(f"Tactful serving {', '.join(loaded)} on http://{host}:{port} (db {safe_location(db)}, clock {clock}, "
               f"{workers} workers, " + (f"learner candidate pid {children.learner.pid}" if learner else
                                         "no learner") + "); Ctrl-C stops", err=True)
    stopping, hangups = False, []

    def _stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: hangups.append(signum))
    code = 0
    while not stopping:
        if hangups:
            hangups.clear()
            reload_files(db, loaded, clock)
        if children.web.poll() is not None:
            click.echo(f"tactful: the web process exited ({children.web.returncode}); stopping", err=True)
            code = 1
            break
        children.tend_learner()
        time.sleep(0.2)
    children.stop()
    if made_here:
        shutil.rmtree(values, ignore_errors=True)
    click.echo("tactful: stopped", err=True)
    sys.exit(code)


def reload_files(db: str, loaded: dict, clock_kind: str) -> None:
    """SIGHUP: validate every policy's file again and publish the valid ones, which every worker
    and the learner serve within about a second; an invalid file is reported and its policy kept."""
    try:
        store = open_store(db, must_exist=True)
    except Exception as exc:  # noqa: BLE001 -- a store away: say so, serve on
        click.echo(f"tactful: SIGHUP: cannot reach the store to reload the policies: {exc}", err=True)
        return
    try:
        reloads = PolicyReloads(store, loaded, lambda p: loaded.__setitem__(p.name, p))
        now = make_clock(clock_kind, store).now()
        for name in sorted(loaded):
            try:
                record = reloads.reload(name, now, "SIGHUP")
                click.echo(f"tactful: SIGHUP: policy {name} reloaded ({'changed' if record['changed'] else 'unchanged'},"
                           f" {record['arm_count']} arms)", err=True)
            except PolicyError as exc:
                click.echo(f"tactful: SIGHUP: policy {name} kept as it runs, its file does not validate: {exc}", err=True)
    finally:
        store.close()


# A learner that dies is replaced at once; if it dies again within this many seconds of its start,
# the next one starts after a pause that doubles from the first to the second figure, each time
# until one runs that long (so that a learner that cannot start does not spin).
LEARNER_STABLE = 60.0
LEARNER_PAUSE = (1.0, 30.0)


class Children:
    """The processes `serve` runs: gunicorn (`web`), whose master replaces a worker that dies, and a
    learner candidate, which `serve` replaces when it dies. Gunicorn exiting stops `serve`."""

    def __init__(self, db: str, env: dict, web_cmd: list[str], learner_cmd: list[str] | None,
                 pauses: tuple[float, float] = LEARNER_PAUSE):
        self.db, self.env, self.learner_cmd, self.pauses = db, env, learner_cmd, pauses
        self.web = subprocess.Popen(web_cmd, env=env)
        self.learner = self._start_learner() if learner_cmd else None
        self.quick_deaths, self.pause, self.restart_at = 0, 0.0, None

    def _start_learner(self) -> subprocess.Popen:
        self.started = time.monotonic()
        return subprocess.Popen(self.learner_cmd, env=self.env)

    def tend_learner(self) -> None:
        """Replace a learner that exited (after its pause)."""
        now = time.monotonic()
        if self.learner is not None and self.learner.poll() is not None:
            dead = self.learner
            self.learner = None
            self.quick_deaths = 0 if now - self.started >= LEARNER_STABLE else self.quick_deaths + 1
            self.pause = 0.0 if self.quick_deaths <= 1 else min(self.pauses[0] * 2 ** (self.quick_deaths - 2),
                                                                self.pauses[1])
            self.restart_at = now + self.pause
            click.echo(f"tactful: the learner process {dead.pid} exited ({dead.returncode}); another starts "
                       + (f"in {self.pause:g}s" if self.pause else "now"), err=True)
            free_lease(self.db, dead.pid)
        if self.learner is None and self.restart_at is not None and now >= self.restart_at:
            self.learner, self.restart_at = self._start_learner(), None
            click.echo(f"tactful: learner candidate pid {self.learner.pid}", err=True)

    def stop(self) -> None:
        running = [p for p in (self.web, self.learner) if p is not None]
        for p in running:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 15
        for p in running:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def free_lease(db: str, pid: int) -> None:
    """Free the learner's lease if the learner process `pid` of this machine, which has exited,
    held it: the next candidate then leads at once rather than when the lease runs out (LEASE_TTL).
    If the store cannot be reached the lease simply runs out."""
    try:
        store = connect(db, migrate=False)
        try:
            store.release_lease(LEASE, lease_holder(pid))
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 -- nothing is lost: the lease expires on its own
        click.echo(f"tactful: could not free the dead learner's lease ({exc}); it runs out within "
                   f"{LEASE_TTL:g}s", err=True)


@click.command(hidden=True)
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8000, type=int)
@click.option("--workers", default=2, type=int)
@insecure_option
@metrics_option
@with_common
def web(host: str, port: int, workers: int, insecure_no_auth: bool, metrics_public: bool, db: str, policies: str,
        clock: str) -> None:
    """Only the gunicorn server (`serve` runs it beside the learner)."""
    _setup_logging()
    store = open_store(db, must_exist=False)
    try:
        access_warning(store, host, insecure_no_auth)  # refuses as `serve` does (which printed the warning)
    finally:
        store.close()
    config = {"DB": db, "POLICIES": policies, "CLOCK": clock, "SECRET": os.environ.get("TACTFUL_SECRET"),
              "METRICS_PUBLIC": metrics_public, "REPORTS": os.environ.get("TACTFUL_REPORTS", "out"),
              "CHECKPOINT_SECONDS": CHECKPOINT_SECONDS, "FREEZE_HEAP": True}

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
                    app = create_app(config)
                    logging.getLogger("tactful").info("worker %d ready (%d objects kept out of the garbage "
                                                      "collector's way)", os.getpid(), gc.get_freeze_count())
                    return app
                except StoreUnavailable as exc:
                    logging.getLogger("tactful").warning("waiting for the store: %s", exc)
                    time.sleep(2.0)

    Server().run()


@click.command("check-policies")
@click.argument("directory", default="examples/policies")
def check_policies(directory: str) -> None:
    """Validate a directory of policy files and print what they declare."""
    for name, p in _load(directory).items():
        click.echo(f"{name}: {len(p.arms)} arms, {len(p.spec.features)} features, "
                   f"{len(p.spec.guardrails.caps)} caps, reward window {p.spec.reward.window:g}s")
