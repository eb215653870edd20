"""migrator: plan-driven, verified and reversible network changes for Kubernetes clusters."""

__version__ = "0.1.0"
