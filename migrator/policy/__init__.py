"""NetworkPolicy (networking.k8s.io/v1): the parsed objects, and the model that decides, for every
(source, destination, port, protocol), whether Kubernetes semantics allow or deny the traffic, and which
policies decide it.

A low layer (beside :mod:`migrator.cni`): pure Python, no target, no I/O. The lab's policy agent compiles
it into iptables chains and ipsets; ``verify --scope policy`` compares its verdicts with what the probes
observe.
"""
