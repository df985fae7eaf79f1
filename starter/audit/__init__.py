"""`deployctl audit`: the record an auditor needs (see starter/audit/collect.py)."""

from starter.audit.collect import *  # noqa: F403
from starter.audit.collect import _md  # noqa: F401
