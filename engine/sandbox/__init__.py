"""Vendor sandboxes: the four secure-messaging APIs served on loopback."""
