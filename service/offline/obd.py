"""Real logged data: the Open Bandit Dataset (Saito et al., arXiv:2008.07146) in a Tactful store.

`tactful import-obd DIR` reads OBD's CSV format: DIR is a campaign directory holding one
directory per logging policy (`random/`, `bts/`), or one such directory itself, or the whole
dataset as obp lays it out (`<logger>/<campaign>/`, campaigns `men`, `women`, `all`), each with
`<campaign>.csv` (one row per impression: timestamp, item_id, position 1..3, click,
propensity_score, user_feature_0..3, user-item_affinity_0..N-1) and `item_context.csv`.

How OBD maps onto Tactful:
  - one policy per logging policy, named `obd-<campaign>-<logger>` (`obd-men-random`,
    `obd-men-bts`), written as a TOML file into the policies directory;
  - an arm per item (content `item_<id>` on a single channel `web`, timing `now`, no hold arm), its
    item features as content features and tags;
  - one decision per impression: the context is the position (`position` as text, as the
    evaluation policy of OBD's protocol acts per position), the four hashed user features and the
    user-item affinities; the chosen arm is the item shown, `probability` is the dataset's
    `propensity_score`; a click is a `click` outcome; the reward is the click (0 or 1);
  - `probabilities` (every arm's logged probability): uniform for `random`; for `bts`, only the
    shown item's propensity is in the data, so the other items' probabilities are those of the
    Bernoulli TS policy reconstructed below, for that position (the estimators use only the
    chosen arm's `probability`).

The Bernoulli TS evaluation policy of OBD's protocol (obp's `BernoulliTS(is_zozotown_prior=True,
campaign=...)` and its `compute_batch_action_dist`): every round draws a Beta(alpha_i, beta_i)
sample per item from ZOZOTOWN's prior of that campaign (service/offline/obd_priors.py: all
three campaigns, obp's published numbers) and shows the top 3 items in order; the probability of
item i at position k is estimated from `n_sim` such draws. obp (which pulls in torch and pins old
libraries) is not a dependency: this reimplements that computation with the same priors; see
docs/ope.md.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from service.offline.errors import EvaluationError
from service.offline.obd_priors import ZOZOTOWN_PRIOR
from service.offline.export import LoggedDecision
from service.times import parse_time
from service.policy import Policy, load_policy
from service.store import Decision, Outcome, Store

LEN_LIST = 3


@lru_cache(maxsize=8)
def bts_action_dist(campaign: str = "men", n_sim: int = 100_000, seed: int = 12345) -> np.ndarray:
    """(n_items, 3): the probability that Bernoulli TS with the ZOZOTOWN prior shows item i at
    position k, from `n_sim` simulated rounds (obp's compute_batch_action_dist)."""
    prior = ZOZOTOWN_PRIOR[campaign]
    alpha, beta = np.array(prior["alpha"], float), np.array(prior["beta"], float)
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(alpha), LEN_LIST))
    for start in range(0, n_sim, 20_000):
        m = min(20_000, n_sim - start)
        draws = rng.beta(alpha, beta, size=(m, len(alpha)))
        top = np.argsort(-draws, axis=1)[:, :LEN_LIST]
        for k in range(LEN_LIST):
            counts[:, k] += np.bincount(top[:, k], minlength=len(alpha))
    return counts / n_sim


def campaign_of(policy_name: str) -> str:
    """The OBD campaign of an imported policy (`obd-<campaign>-<logger>`), or '' for another policy."""
    parts = policy_name.split("-")
    return parts[1] if len(parts) >= 3 and parts[0] == "obd" else ""


def prior_for(campaign: str, n_items: int) -> str | None:
    """Why the Bernoulli TS prior cannot serve `campaign` with `n_items` items, or None when it can."""
    if campaign not in ZOZOTOWN_PRIOR:
        return (f"no Bernoulli TS prior is published for campaign {campaign!r}: Open Bandit Pipeline's "
                f"prior_bts.yaml has {', '.join(sorted(ZOZOTOWN_PRIOR))}")
    k = len(ZOZOTOWN_PRIOR[campaign]["alpha"])
    if k != n_items:
        return f"the {campaign!r} prior covers {k} items and these logs have {n_items}"
    return None


def bts_target(policy: Policy, rows: Sequence[LoggedDecision], n_sim: int = 100_000) -> np.ndarray:
    """The Bernoulli TS policy's distribution over items at each logged decision's position."""
    campaign = campaign_of(policy.name)
    if not campaign or any("position" not in r.decision.context for r in rows[:1]):
        raise EvaluationError(f"bts-zozotown evaluates Open Bandit Dataset logs (obd-men-*, obd-women-*, "
                              f"obd-all-*, from `tactful import-obd`), not {policy.name!r}")
    n_items = sum(1 for a in policy.arms if a.id.startswith("item_"))
    why = prior_for(campaign, n_items)
    if why:
        raise EvaluationError(f"bts-zozotown cannot evaluate {policy.name!r}: {why}")
    dist = bts_action_dist(campaign, n_sim)
    pi = np.zeros((len(rows), len(policy.arms)))
    cols = [policy.arm_index[f"item_{i}:web:now"] for i in range(dist.shape[0])]
    for i, row in enumerate(rows):
        pi[i, cols] = dist[:, int(row.decision.context["position"]) - 1]
    return pi


# -- reading OBD ---------------------------------------------------------------------------------

def logger_dirs(directory: str | Path) -> list[tuple[str, str, Path]]:
    """(campaign, logger, csv file) for each logging policy under `directory`: a logger's directory
    (`<campaign>.csv` beside `item_context.csv`), a campaign's (`<logger>/<campaign>.csv`), or the
    dataset's as obp lays it out (`<logger>/<campaign>/<campaign>.csv`)."""
    d = Path(directory).resolve()
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory")
    found = []
    for items in sorted(p for p in d.glob("**/item_context.csv") if len(p.relative_to(d).parts) <= 3):
        for f in sorted(items.parent.glob("*.csv")):
            if f.name != "item_context.csv":
                sub = items.parent
                logger = sub.parent.name if sub.name == f.stem and sub != d else sub.name
                found.append((f.stem, logger, f))
    if not found:
        raise FileNotFoundError(f"{d} holds no OBD logs (<logger>/<campaign>.csv and item_context.csv)")
    return found


def _read_items(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return [row for row in csv.DictReader(fh)]


def policy_toml(name: str, campaign: str, logger: str, items: list[dict], n_affinities: int) -> str:
    lines = [f'# Open Bandit Dataset, campaign "{campaign}", logged by "{logger}" (imported by tactful import-obd)',
             f'name = "{name}"', f'description = "OBD {campaign} campaign, {logger} logging policy"',
             'channels = ["web"]', ""]
    for it in items:
        tags = ", ".join(f'"f{k}_{it[f"item_feature_{k}"][:12]}"' for k in (1, 2, 3) if f"item_feature_{k}" in it)
        lines += ["[[content]]", f'id = "item_{it["item_id"]}"', 'topic = "item"', f"tags = [{tags}]",
                  f'features = {{ item_feature_0 = {float(it.get("item_feature_0", 0.0)):.6g} }}', ""]
    lines += ["[[timing]]", 'name = "now"', "delay_minutes = 0", "", "[arms]", "hold = false", "",
              "[features]", 'position = { type = "string", required = true, description = "slot 1..3 on the page" }']
    lines += [f'user_feature_{k} = {{ type = "string" }}' for k in range(4)]
    lines += [f'affinity_{k} = {{ type = "number" }}' for k in range(n_affinities)]
    lines += ["", "[guardrails.consent]", 'web = "opt_out"', "", "[reward]", 'window = "1s"',
              "weights = { click = 1.0 }", "min = 0.0", "max = 1.0", "", "[learner]",
              # the example policy's settings, those docs/policies.md found reliable, less what
              # its hold arm needs (-q HR --ignore_linear R): these pages show an item every time
              'vw_args = "--squarecb --gamma_scale 300 --epsilon 0.01 -q UA --ignore I --clip_p 0.5 -l 0.1 -b 22"',
              'fallback_arm = "item_0:web:now"', ""]
    return "\n".join(lines)


def _rows(path: Path) -> Iterator[dict]:
    with path.open(newline="") as fh:
        yield from csv.DictReader(fh)


def import_obd(directory: str | Path, store: Store, policies_dir: str | Path, progress: bool = False) -> list[dict]:
    """Import every logging policy's impressions under `directory`; write each policy's TOML into
    `policies_dir`. Idempotent: an impression already imported is skipped. Returns a summary per
    logger (policy name, impressions, clicks, observed click rate)."""
    out_dir = Path(policies_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = []
    for campaign, logger, path in logger_dirs(directory):
        items = _read_items(path.parent / "item_context.csv")
        header = next(csv.reader(path.open()))
        n_aff = sum(1 for h in header if h.startswith("user-item_affinity_"))
        name = f"obd-{campaign}-{logger}".lower()
        (out_dir / f"{name}.toml").write_text(policy_toml(name, campaign, logger, items, n_aff))
        policy = load_policy(out_dir / f"{name}.toml")
        n_items = len(items)
        arms = [f"item_{i}:web:now" for i in range(n_items)]
        if logger == "bts" and prior_for(campaign, n_items):
            raise ValueError(f"{path}: logged by Bernoulli TS, whose other items' probabilities come from its "
                             f"prior, but {prior_for(campaign, n_items)}")
        dist = bts_action_dist(campaign) if logger == "bts" else None
        total = sum(1 for _ in path.open()) - 1
        n = clicks = 0
        batch: list[Decision] = []
        outcomes: list[Outcome] = []

        def flush():
            store.import_logged(batch, outcomes)
            batch.clear()
            outcomes.clear()

        uniform = [1.0 / n_items] * n_items
        for row in tqdm(_rows(path), total=total, desc=f"importing {name}", unit="imp", disable=not progress):
            at = parse_time(row["timestamp"])
            item, pos = int(row["item_id"]), int(row["position"])
            event_id = f"{name}-{row.get('') or n}"
            context = {"position": str(pos)}
            context.update({f"user_feature_{k}": row[f"user_feature_{k}"] for k in range(4)})
            context.update({f"affinity_{k}": float(row[f"user-item_affinity_{k}"]) for k in range(n_aff)
                            if float(row[f"user-item_affinity_{k}"]) != 0.0})
            probs = uniform if dist is None else dist[:, pos - 1].tolist()
            batch.append(Decision(event_id=event_id, policy=name, person_key=None, decided_at=at,
                                  closes_at=at + policy.spec.reward.window, model_version=None, mode="logged",
                                  arm=arms[item], probability=float(row["propensity_score"]), send_at=at,
                                  channel="web", allowed=arms, probabilities=probs, context=context, history={},
                                  removed={}))
            if row["click"] == "1":
                outcomes.append(Outcome(event_id=event_id, type="click", value=1.0, at=at, outcome_id="click",
                                        received_at=at))
                clicks += 1
            n += 1
            if len(batch) >= 2000:
                flush()
        flush()
        summaries.append({"policy": name, "campaign": campaign, "logger": logger, "impressions": n, "clicks": clicks,
                          "click_rate": clicks / n if n else float("nan")})
    return summaries
