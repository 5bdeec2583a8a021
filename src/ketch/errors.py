"""The error hierarchy every layer raises, grouped by what the caller can do about it.

Each class stands for one behaviour (the object is missing, it conflicts with the current
state, the input is invalid, a service is unreachable). The Engine API maps these classes
to HTTP status codes in one function, and the CLIs map them to exit codes, so a layer never
prints an error itself: it raises, and one place reports.
"""


class KetchError(Exception):
    """Base class of the errors ketch reports to a user."""


class NotFound(KetchError):
    """The named object (container, image, blob, bundle) does not exist."""


class Conflict(KetchError):
    """The request conflicts with the object's current state (a name in use, a running
    container removed without force)."""


class InvalidArgument(KetchError):
    """The input is malformed or names an unsupported option; the message names the input
    and what was expected."""


class Unavailable(KetchError):
    """A service ketch depends on (a registry, the supervisor, the daemon) cannot be
    reached or failed to respond."""


class Forbidden(KetchError):
    """The operation is not allowed (a registry refused credentials, a path outside a
    rootfs)."""


class SystemFailure(KetchError):
    """The kernel or the host refused an operation that should have worked (a mount, a
    cgroup write); the message names the object and the errno text."""
