"""Statuses and replies going back to the hospital as HL7, over MLLP, through a durable outbox.

``messages`` builds the status ACKs and decides which ones a channel gets; ``outbound``
builds the other HL7 we send back (vendor replies, inbound Direct messages); ``reporter``
keeps the outbox and sends it in order; ``qliq_replies`` and ``medallies_inbound`` are the
vendors' webhooks; ``timeline`` renders ``courier status``.
"""
