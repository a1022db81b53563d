"""Batches: jobs grouped, with callbacks when the group completes, finishes or sees a death.

- state.py: what the broker keeps about a batch (``Batch``) and the words
  for its states, its items' states and its callback kinds;
- transitions.py: what a record means for the batches, run inside apply;
- decide.py: the batch requests (create, commit, status, delete), pure;
- views.py: a batch as the replies show it;
- checks.py: the batches' invariants, cross-checked against the jobs.

Empty on purpose: the core's state imports state.py, and transitions.py
imports the core's state, so this package imports none of its modules.
"""
