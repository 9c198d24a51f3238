"""``occ bench radius``: open-loop RADIUS load (PAP Access-Requests, or accounting sessions) against
``occ serve`` and, in the same run, against FreeRADIUS on its stock configuration, with a money
conservation check.

Modules: :mod:`~occ.radius_bench.packets` builds every packet before a phase's timed window;
:mod:`~occ.radius_bench.load` sends them open loop from several UDP sockets and measures;
:mod:`~occ.radius_bench.accounts` provisions and removes the bench accounts and prices what they should
have been charged; :mod:`~occ.radius_bench.processes` starts ``occ serve`` on a private copy of the
config; :mod:`~occ.radius_bench.freeradius` sets up and starts the baseline;
:mod:`~occ.radius_bench.run` runs it all; :mod:`~occ.radius_bench.report` checks and compares.
Percentiles, CPU accounting, the machine, spawning ``occ serve``, the tariff catalog, removing the bench
keys and writing the results are shared with the Diameter bench (:mod:`occ.bench_common`); opening the
accounts, pricing and the conservation check are the Diameter bench's (:mod:`occ.diameter.bench_accounts`).
``docs/radius-bench.md`` tells how to run it and what it measures.
"""
