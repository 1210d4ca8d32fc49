"""qmail's date format (``date822fmt``): ``D Mon YYYY HH:MM:SS -0000`` in UTC, the day not padded.

Why one function: Received lines (injector, smtpd, qmqpd), bounces and qmail-qread print the same
format; each kept its own copy with its own month table.

This module is a core module: it imports nothing of qldap.
"""

from __future__ import annotations

import time

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def gmt_date(when: float) -> str:
    """``D Mon YYYY HH:MM:SS`` in UTC, without the zone (qmail-qread appends ``GMT``)."""
    t = time.gmtime(int(when))
    return f"{t.tm_mday} {MONTHS[t.tm_mon - 1]} {t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def qmail_date(when: float) -> str:
    """``D Mon YYYY HH:MM:SS -0000`` in UTC: the date of Received lines and bounces."""
    return gmt_date(when) + " -0000"
