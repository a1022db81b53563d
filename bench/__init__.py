"""Leash benchmarks, side by side with beanstalkd and a Redis reliable queue.

``python -m bench`` (or ``make bench``) starts each broker as a real server
process on 127.0.0.1 with a temporary data directory, drives it through the
client its users would pick, and writes a Markdown table of medians, min-max
and Leash/peer ratios. ``python -m bench --quick`` is a one-minute smoke run.

Modules:
- ``servers``: start and stop the three brokers (by pid), read their RSS.
- ``drivers``: the same small set of operations for each broker's client.
- ``beanstalk_raw``: a pipelined beanstalk protocol driver (greenstalk has no pipelining).
- ``pool``: worker processes that run a task on a signal and report back.
- ``workloads``: what each row of the table measures.
- ``plan``: which systems and workloads a run has, with their counts.
- ``report``: statistics, tables, targets, the machine section.
- ``profile``: the hot path under py-spy or cProfile.
"""
