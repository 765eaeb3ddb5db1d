"""The official BIDS schema (from bidsschematools) as qmrbids uses it."""

from qmrbids.schema.bids import bids_schema, bids_version, entity_order, required_sidecar_fields, schema_version

__all__ = ["bids_schema", "bids_version", "entity_order", "required_sidecar_fields", "schema_version"]
