"""An independent Avro producer: encodes sample events with fastavro against schemas/,
in single-object encoding (C3 01 + CRC-64-AVRO fingerprint + datum), one hex line per
record: "<kind> <key> <hex>". It shares no code with policy-push.

Usage: fastavro_producer.py DATABASE HOST"""
import io
import json
import struct
import sys
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

DATABASE, HOST = sys.argv[1], sys.argv[2]
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


EMPTY = 0xC15D213AA4D7A795
TABLE = []
for i in range(256):
    fp = i
    for _ in range(8):
        fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
    TABLE.append(fp)


def crc64_avro(data):
    """The Rabin fingerprint exactly as the Avro specification writes it."""
    fp = EMPTY
    for byte in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ byte) & 0xFF]
    return fp


def single_object(record_name, datum):
    raw = json.loads((SCHEMAS / f"{record_name}.avsc").read_text())
    schema = parse_schema(raw)
    canonical = to_parsing_canonical_form(schema)
    header = struct.pack("<Q", crc64_avro(canonical.encode()))
    # fastavro renders the same fingerprint as its little-endian bytes in hex.
    assert header.hex() == fingerprint(canonical, "CRC-64-AVRO"), "fingerprint implementations disagree"
    buf = io.BytesIO()
    buf.write(b"\xc3\x01")
    buf.write(header)
    fastavro.schemaless_writer(buf, schema, datum)
    return buf.getvalue()


events = [
    ("profile", "ind_user", "UserProfile", {
        "user": "IND_User", "version": 5, "groups": ["analysts"],
        "attributes": {"region": ["eu", "us"]},
        "current_project": {"id": "proj", "purposes": ["fraud"]},
        "acknowledged_purposes": ["fraud"], "data_sources": ["ds-1"],
    }),
    ("data_source", "ds-1", "DataSource", {
        "id": "ds-1", "version": 2, "host": HOST, "database": DATABASE, "schema": "raw",
        "table": "orders", "view_name": "Orders",
        "columns": [{"name": "id", "type": "integer", "tags": []},
                    {"name": "email", "type": "text", "tags": ["pii"]}],
        "tags": ["sales"], "status": "DISABLED",
    }),
    ("policy", "pol-1", "Policy", {
        "id": "pol-1", "version": 3, "status": "ACTIVE",
        "target": {"data_source_ids": ["ds-1"], "tags": []},
        "rule": ("immuta.policy_push.Mask", {"column_tag": "pii", "method": "CONSTANT", "constant": "x"}),
        "exceptions": {"groups": ["admins"], "purposes": []},
    }),
    ("policy", "pol-2", "Policy", {
        "id": "pol-2", "version": 1, "status": "ACTIVE",
        "target": {"data_source_ids": [], "tags": ["sales"]},
        "rule": ("immuta.policy_push.RowFilter", {"kind": "MATCHING_ATTRIBUTE", "column_tag": "geo", "attribute": "region", "group": None}),
        "exceptions": {"groups": [], "purposes": ["fraud"]},
    }),
    ("impersonation", "ind_user", "Impersonation", {"user": "ind_user", "version": 1, "allowed": True}),
]

for kind, key, name, datum in events:
    sys.stdout.write(f"{kind} {key} {single_object(name, datum).hex()}\n")
