"""Statuses and replies going back to the hospital as HL7, over MLLP, through a durable outbox.

``messages`` builds the status ACKs (MSA, ERR, ``ZDS``) and decides which ones a channel
gets; ``documents`` builds the MDM^T02 for messages from outside (``ZIN``); ``reporter``
keeps the per-channel outbox and sends it in order; ``webhooks`` (routes and who they let in)
and ``webhook_server`` (bounded before it authenticates) serve the vendors' POSTs;
``qliq_replies`` / ``qliq_keys`` and ``medallies_inbound`` are the vendor-specific parts.
``courier status`` (``engine.commands.status``) shows one message's whole timeline.
"""
