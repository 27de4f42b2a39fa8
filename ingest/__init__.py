"""ctwa-ingest: Sinch Conversation API callbacks into Postgres, with Click-to-WhatsApp ad attribution.

``ingest`` holds the receiver (`ingest.receiver`) and what the receiver and the workers share: settings, logging,
the callback contract, the message formats, the broker topology and the link that keeps a broker connection.
It imports nothing from ``workers``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctwa-ingest")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
