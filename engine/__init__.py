"""Courier: HL7 v2 over MLLP in, secure clinical messaging out, statuses back as HL7.

Data flows one way through the subpackages:
``mllp`` (bytes → frame) → ``message`` (frame → message, ACK) → ``channel`` (routing, filter)
→ ``mapping`` (message → payload) → ``destinations`` (payload → vendor request)
→ ``delivery`` (durable queue) → ``status`` (vendor states → HL7 back to the sender).
``store`` keeps everything durable. The vendor sandboxes are their own package,
``courier_sandbox``, which imports nothing from here.
"""

__version__ = "0.1.0"
