"""Step 6 of the request path: the intent record of a run, deploy or admin call.

Written and fsynced before the call is forwarded (DESIGN.md §2 "Fail closed"): when the trail
cannot take it, the call is answered 503 and never reaches the upstream. Reads write no intent;
when the trail is failing they are served (and the failure counted) unless
`audit.reads_on_failure: refuse`.
"""

from __future__ import annotations

from proxy.audit.record import CREATED, record
from proxy.audit.sinks import AuditLog, AuditUnavailable
from proxy.catalog.operation import Action
from proxy.context import RequestContext
from proxy.errors import Reject


async def write_ahead(audit: AuditLog, ctx: RequestContext) -> None:
    if ctx.operation is not None and ctx.operation.name in CREATED:
        ctx.capture = bytearray()  # the answer names the created run (record.created)
    if ctx.action is None or ctx.action == Action.READ:
        if audit.refuses_reads():
            raise unavailable()
        return
    if not audit.enabled:
        return
    try:
        ctx.intent_seq = await audit.write_ahead(record(ctx, "intent")) or None
    except AuditUnavailable:
        raise unavailable() from None


def unavailable() -> Reject:
    return Reject(503, "audit-unavailable", "Audit trail unavailable",
                  "the audit trail cannot record this call right now; it was not forwarded",
                  headers=((b"retry-after", b"5"),))
