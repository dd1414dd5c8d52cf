"""Model versions over time: the online learner, the version registry (activate, roll back,
promote), the revert guard, shadow scoring and offline retraining. Build a learner with
`service.runtime.build_learner`."""
