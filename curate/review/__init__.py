"""Review: who looks at which queue item next, what they decided, and how far the team is.

A plain function API over the curation store, used by the annotation app and by the demo's
simulated annotators alike. Every function takes the caller's connection first::

    with store.connect(db) as conn:
        name = annotators.sign_in(conn, "ana")
        for item in leases.lease_next(conn, name, k=1, lease_seconds=300, n=12):
            verdicts.record_verdict(conn, name, item.sha256, "no_foreground", seconds=2.1)
        verdicts.undo_last(conn, name)   # the last verdict is undone; its item comes back to "ana"
        progress.progress_frame(conn); progress.progress_summary(conn, k=1)
        agreement.agreement_summary(conn)
        leases.release(conn, name)       # give back every item "ana" holds

Modules, in the order an annotator meets them: ``annotators`` (sign-in, names), ``leases`` (the
next items, item details), ``verdicts`` (record, undo, live verdicts), ``progress`` (the team's
progress and ETA), ``agreement`` (Cohen's and Fleiss' kappa).
"""
