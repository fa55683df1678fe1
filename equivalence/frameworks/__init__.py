"""The frameworks: one adapter per framework (``base.Adapter``), found through one registry (``registry``).

Every framework import, transposition and quirk lives in its adapter module; nothing outside this package
imports a framework.
"""
