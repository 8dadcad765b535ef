"""The range of WAMP ids (session, request, publication, subscription and registration ids)."""

from __future__ import annotations

#: WAMP ids are integers from 1 to 2^53, so that JavaScript numbers hold them exactly.
MAX_ID = 2**53
