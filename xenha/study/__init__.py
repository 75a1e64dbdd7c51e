"""The storage study: iSCSI against AoE for 1-20 concurrent guests' jobs, on
the lab's real tgtd and vblade (or a site's scratch targets), as chapter 4.3
of the thesis this product comes from measured them in 2007.

`worker` is one client (one guest's job: write, then read, S MiB on its own
disk), run as its own process; `run` starts N of them behind a barrier and
measures the target; `report` prints, writes JSON and plots.
"""
