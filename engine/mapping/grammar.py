"""The mapping language, declared once: every key a mapping file may use, with its meaning.

A mapping file (``mappings/*.toml``) turns one HL7 message into the named payload fields of one
destination. The loader accepts exactly the keys declared here; the README section is generated
from (and checked against) :data:`MAPPING_KEYS`, :data:`FIELD_KEYS`, :data:`EACH_KEYS` and
:data:`engine.mapping.transforms.TRANSFORMS`.

Paths are HL7 notation, 1-based: ``SEG[occurrence]-field[repetition].component.subcomponent``::

    PID-5.2        second component of the first PID-5
    PID-3[2].1     first component of the second repetition of PID-3
    OBX[2]-5.5     fifth component of OBX-5 in the second OBX of the message
    PID-3.4.1      first sub-component of PID-3.4
    ZDS-1          Z-segments work the same way

Example::

    input = ["ORU^R01"]            # MSH-9 types this mapping accepts ("ORU" = any ORU event)
    output = "conneqt"             # the destination type (the channel's `type`)

    [lookups.ods]                  # code -> value tables for the lookup transform
    G85001 = "Y01234"

    [fields]
    subjectNhsNumber = { path = "PID-3.1", where = { "PID-3.5" = "NH" }, required = true,
                         transforms = ["digits_only", "nhs_number"] }
    messageId = { template = "{context.channel}/{MSH-3}/{MSH-4}/{MSH-10}",
                  transforms = [{ uuid5 = "url" }] }
    type = { const = "ToolbarInstantMessage" }
    topic = { template = "{OBR-4.2} result", transforms = [{ max_len = 60 }] }
    recipientOds = { path = "PD1-3.10", required = true, transforms = [{ lookup = "ods" }] }
    bodyText = { path = "OBX-5", all = true, where = { "OBX-2" = "TX" }, transforms = [{ join = "\\n" }] }
    familyName = "PID-5.1"         # a bare string is short for { path = "..." }

    [each.attachments]             # one item per OBX whose OBX-2 is ED
    segment = "OBX"
    where = { "OBX-2" = "ED" }
    min = 1
    [each.attachments.fields]
    content = { path = "OBX-5.5", required = true, transforms = ["base64_check"] }
    fileName = { template = "{OBR-3.1}-{OBX-1}.pdf" }   # OBR = the OBR this OBX belongs to

Rules the evaluator follows:

- A value is read from exactly one source: ``path``, ``const``, ``template`` or ``context``.
  ``path = ["TQ1-9.1", "ORC-7.6", "OBR-5"]`` reads the first of several paths that has a value.
- ``where`` is a table of path → value (or list of accepted values). Conditions on the value's
  own field (``PID-3`` where ``PID-3.5 = NH``) pick the first matching *repetition*; any other
  condition filters *segments* (``OBX-5`` where ``OBX-3.3 = SCT``: the first OBX coded so).
- Group structure: inside ``each`` over a segment, a path to that segment means the current
  one, and a path to another segment means the nearest one *before* it (the OBR an ORU OBX
  belongs to, the TXA of an MDM OBX, the PID of its patient), else the first in the message.
  A path with an explicit ``[occurrence]`` always means that segment of the message.
- An empty value takes ``default``; a still-empty ``required`` value fails with HL7 error 101;
  an empty optional value is left out of the payload. Transforms run in order on non-empty
  values; their failures carry error 102 (data type) or 103 (table value not found).
- ``all = true`` reads every matching segment and repetition into a list; ``join`` makes it
  one string again. Template placeholders are paths or ``context.<name>`` (values that are not
  in the message, such as the channel name); ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

from engine.destinations.registry import destination_types
from engine.mapping.transforms import TRANSFORMS

OUTPUTS = destination_types()

MAPPING_KEYS: dict[str, str] = {
    "schema": "format version of the mapping file; 1 (optional)",
    "description": "what the mapping is for, in words (optional)",
    "input": 'message types (MSH-9) it applies to, e.g. ["ORU^R01"] or ["MDM^T02", "MDM^T10"]',
    "output": "the destination type whose payload it builds: " + ", ".join(OUTPUTS),
    "lookups": "[lookups.<name>] tables of code = value, used by the lookup transform",
    "fields": "[fields] output key = field rule (a table, or a bare path string)",
    "each": "[each.<name>] a list with one item per matching segment",
}

SOURCES = ("path", "const", "template", "context")

FIELD_KEYS: dict[str, str] = {
    "path": 'read the value at an HL7 path, e.g. "PID-5.1"; a list of paths takes the first with a value',
    "const": "a literal value (string, number or boolean)",
    "template": 'text with {PATH} and {context.<name>} placeholders, e.g. "{PID-5.2} {PID-5.1}"',
    "context": "a value given by the engine rather than the message, e.g. channel",
    "where": "path = value table: picks the repetition or filters the segments read by path",
    "all": "true: read every matching segment and repetition into a list (see join)",
    "default": "literal used when the value is empty",
    "required": "true: an empty value refuses the message (HL7 error 101)",
    "transforms": "list of transform names or { name = argument } tables, applied in order",
}

EACH_KEYS: dict[str, str] = {
    "segment": "the segment to repeat over, e.g. OBX",
    "where": "path = value table a segment must match to make an item",
    "min": "fewest items accepted (default 0); fewer refuses the message (HL7 error 101)",
    "fields": "[each.<name>.fields] output key = field rule, read per segment",
}


def render_markdown() -> str:
    """The README's mapping reference: one table per key group, then the transforms."""
    out = ["#### Mapping file keys", ""]
    for title, keys in (
        ("top level", MAPPING_KEYS),
        ("field rule", FIELD_KEYS),
        ("`[each.<name>]`", EACH_KEYS),
    ):
        out += [f"| {title} key | meaning |", "|---|---|"]
        out += [f"| `{name}` | {doc} |" for name, doc in keys.items()]
        out.append("")
    out += ["#### Transforms", "", "| transform | argument | what it does |", "|---|---|---|"]
    for spec in TRANSFORMS.values():
        argument = spec.argument or "—"
        if spec.options:
            argument += "; options: " + ", ".join(spec.options)
        out.append(f"| `{spec.name}` | {argument} | {spec.doc} |")
    return "\n".join(out) + "\n"
