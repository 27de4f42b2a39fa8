"""What became of a conversion event: its status, and every move between statuses — the one definition that the
table's check, the senders' outbox, erasure, ``ctwa conversions`` and ``ctwa report`` read.

::

    pending ──claim──▶ sending ──accept──▶ sent
     │  ▲ ▲               │ ├───refuse──▶ failed ──────┐
     │  │ └──release──────┘ └───lose────▶ unconfirmed ─┤
     │  └──────────────────retry───────────────────────┘   (an operator's `ctwa conversions retry`)
     ├──no click──▶ unattributed (claimed again later; retry too)
     ├──no setup──▶ unconfigured (its click's app has no Meta setup: pending again once one is loaded)
     ├──expire────▶ expired      (pending or unconfigured, older than 7 days)
     └──erase─────▶ erased       (pending, unattributed or unconfigured, when the person is erased)

``sent``, ``expired`` and ``erased`` are final. docs/conversions.md says what each means to the business.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ACCEPT",
    "CLAIM",
    "COUNTED",
    "ERASE",
    "EXPIRE",
    "HOLD",
    "LOSE",
    "MOVES",
    "NOT_RETRIED",
    "NO_CLICK",
    "NO_SETUP",
    "PENDING",
    "RECHECK",
    "REFUSE",
    "RELEASE",
    "RETRY",
    "STATUSES",
    "UNCONFIGURED",
    "Move",
    "sql_in",
]

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
UNATTRIBUTED = "unattributed"
EXPIRED = "expired"
ERASED = "erased"
FAILED = "failed"
UNCONFIRMED = "unconfirmed"
UNCONFIGURED = "unconfigured"

# In the order of the table's check constraint (migrations 0006 and 0009).
STATUSES = (PENDING, SENDING, SENT, UNATTRIBUTED, EXPIRED, ERASED, FAILED, UNCONFIRMED, UNCONFIGURED)

# The events the analytics count as an ad's conversions (ad_conversions_daily, `ctwa report`): attributed to one
# of its clicks and sent, or on their way to Meta; failed ones are not.
COUNTED = (PENDING, SENDING, SENT, UNCONFIRMED)


def sql_in(statuses: tuple[str, ...]) -> str:
    """``statuses`` as a SQL list of literals, ``('pending', 'unattributed')``: a partial index is used only by a
    query whose condition is written as its predicate is."""
    return "(" + ", ".join(f"'{status}'" for status in statuses) + ")"


class Move(NamedTuple):
    """Events in one of ``sources`` may become ``target``; a statement making the move matches only those."""

    sources: tuple[str, ...]
    target: str

    @property
    def where(self) -> str:
        """The condition on ``status`` that limits a statement to the events this move may take."""
        return f"status IN {sql_in(self.sources)}"


# The senders' moves. An event is claimed (committed `sending`) before its request leaves, and leaves `sending`
# only by what its sender learnt: Meta counted it, refused it for good, or no answer came (or the sender died),
# in which case Meta may have counted it and it is not sent again by itself (docs/conversions.md).
CLAIM = Move((PENDING, UNATTRIBUTED), SENDING)
NO_CLICK = Move((PENDING, UNATTRIBUTED), UNATTRIBUTED)
# Its click's app has no Meta setup (and the deployment none of its own): kept until a setup is loaded (RECHECK).
NO_SETUP = Move((PENDING, UNATTRIBUTED), UNCONFIGURED)
RECHECK = Move((UNCONFIGURED,), PENDING)
# Attributed to a click whose app's route is parked or paused: it waits, pending, its click noted.
HOLD = Move((PENDING, UNATTRIBUTED), PENDING)
EXPIRE = Move((PENDING, UNCONFIGURED), EXPIRED)
ACCEPT = Move((SENDING,), SENT)
REFUSE = Move((SENDING,), FAILED)
LOSE = Move((SENDING,), UNCONFIRMED)
RELEASE = Move((SENDING,), PENDING)
# An erased person's events are never sent from now on; those already settled keep their status.
ERASE = Move((PENDING, UNATTRIBUTED, UNCONFIGURED), ERASED)
# The operator's: send again what came to nothing, or whose click may be stored by now.
RETRY = Move((FAILED, UNCONFIRMED, UNATTRIBUTED), PENDING)

MOVES = (CLAIM, NO_CLICK, NO_SETUP, RECHECK, HOLD, EXPIRE, ACCEPT, REFUSE, LOSE, RELEASE, ERASE, RETRY)

# Why `ctwa conversions retry` refuses the statuses RETRY does not take.
NOT_RETRIED = {
    PENDING: "they are waiting to be sent already",
    SENDING: "they are in a request to Meta now",
    SENT: "Meta counted them; sent again, they would count twice",
    EXPIRED: "Meta refuses events more than 7 days old",
    ERASED: "the person was deleted; their conversions are never sent",
    UNCONFIGURED: "their app has no Meta setup: add its [app.meta] to the apps file and reload the senders (SIGHUP)",
}
