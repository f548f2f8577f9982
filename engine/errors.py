"""The exceptions Courier raises, one small tree under :class:`CourierError`."""


class CourierError(Exception):
    """Base class of every error Courier raises on purpose."""


class ConfigError(CourierError):
    """A channel or mapping file is wrong; the message names file, key path and line."""


class MessageError(CourierError):
    """Bytes that cannot be read as an HL7 v2 message (no readable MSH)."""


class PathError(CourierError):
    """An HL7 path such as ``PID-3[2].1`` that does not follow the grammar."""


class StoreError(CourierError):
    """The durable store could not do what was asked; the sender should resend later."""
