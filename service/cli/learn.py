"""`tactful learn`: a learner candidate alone (`serve` starts one beside its web workers). A module
of its own so that what only the learner needs -- the contents review and its scikit-learn
(service/learning/retire.py) -- is never loaded by `serve` or its web workers."""
from __future__ import annotations

import click

from service.cli.options import open_store
from service.cli.serve import _load, _setup_logging, with_common
from service.clock import make_clock
from service.learning.learner import run_forever
from service.learning.retire import ContentsReview
from service.runtime import CHECKPOINT_SECONDS, build_learner


@click.command()
@click.option("--interval", type=float, default=None, help="Seconds between learning rounds (policy default; the requests' seconds under --clock request).")
@click.option("--batch", type=click.IntRange(1), default=100_000, show_default=True,
              help="At most this many decisions per published model version.")
@with_common
def learn(interval: float | None, batch: int, db: str, policies: str, clock: str) -> None:
    """Run a learner candidate alone (`serve` starts one): it learns while it holds the store's lease."""
    _setup_logging()
    loaded = _load(policies)
    store = open_store(db, must_exist=False)
    # a step rewrites every learned decision's row (about a WAL page each): the commit would
    # otherwise copy them all back into the database file before the next step could start
    store.checkpoint_in_background(CHECKPOINT_SECONDS)
    review = ContentsReview(store)
    run_forever(build_learner(store, loaded, make_clock(clock, store), batch=batch, follow_reloads=True,
                              also=[review.before_step]), interval)
