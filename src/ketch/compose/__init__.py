"""The compose runner: Compose Specification loader, dependency-ordered plan and a runner
that drives any Engine API endpoint.

Limitation: nothing is implemented yet; there is no `ketch compose` command.
"""
