"""Adapters that read the EgoAtlas sources' published layouts into the hand contract.

Each adapter lives in its own module and is registered under the ``metis.datasets`` entry-point
group with its source name; :mod:`metis_datasets.sources._common` holds what they share, and
``metis-datasets convert SOURCE RAW_DIR OUT_DIR`` (:mod:`metis_datasets.convert`) runs any of them.
"""
