"""Off-policy estimation: the value of a target policy from decisions another policy logged.

    data          BanditData, the logged feedback as arrays; importance weights; Kish's ESS
    estimators    IPS, SNIPS, DM, DR, Switch-DR, Replay: one shape (rounds, estimate, interval)
    intervals     Student's t with Satterthwaite's degrees of freedom, bootstrap, Wilson
    reward_model  the ridge reward model of DM, DR and Switch-DR, and its influence function
    evaluation    OffPolicyEvaluation (every estimator on one log), the paired DR difference

Plain numpy, scipy and scikit-learn: nothing here imports the service.
"""
from models.ope.data import BanditData, effective_sample_size, weights
from models.ope.estimators import DM, DR, IPS, SNIPS, TAUS, ModelVariance, Replay, SwitchDR
from models.ope.evaluation import Estimate, OffPolicyEvaluation, default_estimators, estimate_differences
from models.ope.intervals import bootstrap_mean_interval, satterthwaite_df, t_interval, welch_df, wilson
from models.ope.reward_model import RewardModel

__all__ = ["BanditData", "DM", "DR", "Estimate", "IPS", "ModelVariance", "OffPolicyEvaluation", "Replay",
           "RewardModel", "SNIPS", "SwitchDR", "TAUS", "bootstrap_mean_interval", "default_estimators",
           "effective_sample_size", "estimate_differences", "satterthwaite_df", "t_interval", "weights",
           "welch_df", "wilson"]
