"""MLLP: bytes → frames on the way in, frames → bytes on the way out (server and client)."""

from engine.mllp.framing import Framer, frame

__all__ = ["Framer", "frame"]
