"""Where units run: backends.get("local") (in this process, batched). See base.py for the interface."""

from .base import Backend, Caption, Done, Painted, backend_for, get, key_part, register

__all__ = ["Backend", "Caption", "Done", "Painted", "backend_for", "get", "key_part", "register"]
