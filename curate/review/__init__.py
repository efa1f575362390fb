"""Review: who looks at which queue item next, what they decided, how far the team is, and the
lead's view of it all.

A plain function API over the curation store, used by the annotation app and by the demo's
simulated annotators alike. Every function takes the caller's connection first and normalises
names itself ("ANA " and "ana" are one annotator)::

    with store.connect(db) as conn:
        leases.set_review_overlap(conn, 2)               # the team's overlap (app launch)
        name = annotators.sign_in(conn, "ana")
        page = leases.lease_next(conn, name, n=12, lease_seconds=300, gold_share=0.05)
        leases.renew_leases(conn, name, [i.sha256 for i in page])   # while ana works the page
        result = verdicts.submit_verdicts(conn, name, [(i.sha256, "no_foreground", 2.1)
                                                       for i in page])
        if result.stale:                                  # some items went to someone else
            show(result.message)                          # "This page expired: ... fresh items."
        verdicts.undo_verdicts(conn, name, result.verdict_ids)     # undo the whole page
        verdicts.change_verdict(conn, name, verdict_id, "contains_foreground")  # History view
        progress.progress_summary(conn)                   # this round's human verdicts only
        leases.release(conn, name)                        # sign-out

    with store.connect(db) as conn:                       # the lead: no leases, sees everything
        lead = annotators.sign_in_lead(conn, "lee")
        team.annotator_report(conn)      # status, speed, agreement with consensus, gold accuracy
        team.held_items(conn)            # who holds what, for how long
        queue = adjudication.disagreements(conn)
        adjudication.adjudicate(conn, lead, queue.sha256[0], "no_foreground")
        gold.mark_gold(conn, lead, queue.sha256[0])

Modules, in the order an annotator meets them: ``annotators`` (sign-in, names, the lead role),
``leases`` (the next items, renewal, the team's overlap, item details), ``verdicts`` (submit with
typed refusals, undo, change, read back), ``progress`` (the round's progress and ETA),
``agreement`` (Cohen's and Fleiss' kappa, each annotator against the consensus); and for the lead:
``team`` (held items, idle annotators, the per-annotator table), ``adjudication`` (the
disagreement queue and the lead's verdicts), ``gold`` (gold items and accuracy on them).
"""
