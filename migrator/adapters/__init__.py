"""Adapters: implementations of the ports (:mod:`migrator.ports`) for real and fake targets."""
