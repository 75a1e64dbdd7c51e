"""The checks' code; plugins/check_* are three-line launchers for it.

A script's own source is compiled again on every run, a module's is cached
as byte code: with the code here, a check run thousands of times a day does
not recompile a few hundred lines each time (about 2 ms a run).
"""
