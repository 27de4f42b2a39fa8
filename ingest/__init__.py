"""ctwa-ingest: Sinch Conversation API callbacks into Postgres, with Click-to-WhatsApp ad attribution.

``ingest`` holds the receiver and everything the receiver and the workers share: settings, the broker
topology and the callback contract.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctwa-ingest")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
