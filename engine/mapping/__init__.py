"""The mapping language: declarative TOML files that turn an HL7 message into a destination payload.

The grammar is documented (with examples) in :mod:`engine.mapping.grammar`. Typical use::

    mapping = load_mapping("mappings/oru_r01_to_conneqt.toml")
    if mapping.accepts(message):
        payload = mapping.apply(message, context={"channel": "lis-oru-to-conneqt"})
"""

from engine.mapping.failure import MappingFailure
from engine.mapping.loader import load_mapping
from engine.mapping.mapping import Mapping, OutputKey
from engine.mapping.rules import FieldTrace

__all__ = ["FieldTrace", "Mapping", "MappingFailure", "OutputKey", "load_mapping"]
