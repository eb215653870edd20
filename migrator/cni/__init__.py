"""CNI drivers: one vocabulary (CniKind, CniInfo) and a driver per CNI."""
