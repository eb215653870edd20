"""The in-cluster side of the Kubernetes prober: :mod:`runner`, shipped with the agent in a ConfigMap."""
