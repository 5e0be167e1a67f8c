"""covid-repro: a reproducible companion to two COVID-19 imaging papers.

One module per pipeline stage: :mod:`reprolib.data` (manifests, fetch),
:mod:`reprolib.phantoms` (synthetic data), :mod:`reprolib.io` (CT ingestion),
:mod:`reprolib.preprocess`, :mod:`reprolib.models`, :mod:`reprolib.train`,
:mod:`reprolib.evaluate`, :mod:`reprolib.localize`, :mod:`reprolib.cxr`,
:mod:`reprolib.provenance`, :mod:`reprolib.book`, :mod:`reprolib.runner` and
:mod:`reprolib.cli`.
"""

__version__ = "0.1.0"
