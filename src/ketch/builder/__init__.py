"""The Dockerfile builder: parser, evaluator, build cache and multi-stage builds.

Limitation: nothing is implemented yet; `ketch build` and the Engine API's /build route
do not exist.
"""
