"""mflab: a fleet of real Debian 12 hosts on one machine, booted with systemd-nspawn.

The lab is what tests and `make demo` run against: one base image, booted several times
with volatile overlays onto one bridge in 198.18.0.0/24 (the benchmarking range, which
never routes off this machine).
"""
