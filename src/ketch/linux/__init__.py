"""Typed wrappers for the Linux system calls that Python 3.11's ``os`` module lacks.

Every namespace, mount and process-control call in ketch goes through
:mod:`ketch.linux.syscalls`, so that there is one place to audit and one error
convention: a failed call raises :class:`OSError` with the errno, its text and the path
or object it was made on.
"""
