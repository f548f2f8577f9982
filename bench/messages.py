"""Benchmark messages: a ~2 KB ORU^R01 with 10 OBX, and a ~200 KB one with a PDF in OBX ED."""

from __future__ import annotations

import base64
import os

_HEADER = (
    "MSH|^~\\&|CITYLAB|CITYLAB|COURIER|NHS|20260101120000+0000||ORU^R01^ORU_R01|{cid}|P|2.5\r"
    "PID|1||A{cid}^^^CITYHOSP^MR~9434765919^^^NHS^NH||SMITH^ALEXANDRA^JANE^^MS||19800101|F|||"
    "12 ACACIA AVENUE^^LEEDS^^LS1 4AP^GBR||01130000000\r"
    "PD1|||LEEDS GP PRACTICE^^^^^^^^^B86001\r"
    "PV1|1|O|OPD^^^CITYHOSP||||C1234^JONES^ROBERT^^^DR\r"
    "ORC|RE|ORD{cid}|ACC{cid}||CM\r"
    "OBR|1|ORD{cid}|ACC{cid}|24331-1^Lipid and renal panel^LN|||20260101110000+0000|||||||"
    "20260101111500+0000||C1234^JONES^ROBERT^^^DR||||||20260101115500+0000|||F\r"
)
_TESTS = [
    ("2093-3", "Cholesterol", "5.2", "mmol/L", "<5.0"),
    ("2571-8", "Triglyceride", "1.4", "mmol/L", "<1.7"),
    ("2085-9", "HDL cholesterol", "1.3", "mmol/L", ">1.0"),
    ("13457-7", "LDL cholesterol", "3.2", "mmol/L", "<3.0"),
    ("2160-0", "Creatinine", "88", "umol/L", "59-104"),
    ("3094-0", "Urea", "5.1", "mmol/L", "2.5-7.8"),
    ("2951-2", "Sodium", "140", "mmol/L", "133-146"),
    ("2823-3", "Potassium", "4.3", "mmol/L", "3.5-5.3"),
    ("33914-3", "eGFR", "78", "mL/min/1.73m2", ">60"),
    ("1751-7", "Albumin", "42", "g/L", "35-50"),
]
_OBX = "OBX|{n}|NM|{code}^{name}^LN||{value}|{unit}^{unit}^UCUM|{range}|N|||F|||20260101115500+0000\r"
_NOTE = "NTE|{n}|L|Specimen received in good condition; analysed on the routine chemistry platform.\r"


def small_oru(control_id: str) -> bytes:
    """About 2 KB: MSH, PID, PD1, PV1, ORC, OBR and 10 OBX with notes."""
    text = _HEADER.format(cid=control_id)
    for n, (code, name, value, unit, ref) in enumerate(_TESTS, 1):
        text += _OBX.format(n=n, code=code, name=name, value=value, unit=unit, range=ref)
        text += _NOTE.format(n=n)
    return text.encode("ascii")


_PDF = base64.b64encode(b"%PDF-1.4\n" + os.urandom(150 * 1024)).decode("ascii")


def large_oru(control_id: str) -> bytes:
    """About 200 KB: the small message plus a base64 PDF report in an OBX ED."""
    ed = f"OBX|11|ED|PDF^Report^L||^AP^PDF^Base64^{_PDF}||||||F\r"
    return small_oru(control_id) + ed.encode("ascii")
