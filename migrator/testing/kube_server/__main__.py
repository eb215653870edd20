"""``python -m migrator.testing.kube_server --nodes N --kubeconfig PATH``: see :mod:`.process`."""

from migrator.testing.kube_server.process import main

main()
